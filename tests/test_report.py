"""The one-file HTML report: built for the shipped LeNet-5 on the real MNIST test split, read back
with html.parser and checked against independent numbers (a plain forward pass, scikit-learn,
F.conv2d, sum of parameter sizes); opened offline in Chromium; and built by one click on the
Model page (the download button's deferred callable) and in the running app."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix
from streamlit.testing.v1 import AppTest

from dashboard import data, models, report
from dashboard.analysis import atlas, channels, metrics, probe
from dashboard.base.errors import LensError
from dashboard.models import checkpoints
from dashboard.report import atlas_sheet
from tests.conftest import REPO_ROOT
from tests.test_page_confusion import array  # plotly's typed arrays → numpy

SHIPPED = REPO_ROOT / "trained" / "lenet5-mnist.safetensors"  # read only
TIMEOUT = 180
APP = str(REPO_ROOT / "app.py")
NAME = "lenet5-mnist-report.html"


# --------------------------------------------------------------------------- reading the report


class ReportParser(HTMLParser):
    """What the tests look at: sections, elements by id, table rows, scripts, references."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[str] = []
        self.headings: list[str] = []
        self.by_id: dict[str, dict[str, str]] = {}
        self.text_of: dict[str, str] = {}
        self.references: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.scripts: list[dict[str, str]] = []
        self.graph_divs: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._open: list[tuple[str, str | None]] = []  # (tag, id) of elements being read
        self._texts: dict[str, list[str]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_h2 = False
        self._script: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for key in ("src", "href", "action", "data"):
            if key in a:
                self.references.append((tag, key, a[key]))
        element_id = a.get("id")
        if element_id:
            self.by_id[element_id] = a
            self._texts[element_id] = []
        if tag == "section":
            self.sections.append(a.get("id", ""))
        if tag == "h2":
            self._in_h2, self._h2 = True, []
        if tag == "div" and "plotly-graph-div" in a.get("class", ""):
            self.graph_divs.append(a.get("id", ""))
        if tag == "table" and element_id:
            self._table = element_id
            self.tables[element_id] = []
        if tag == "tr" and self._table:
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._cell = []
        if tag == "script":
            self._script = {**a, "body": ""}
        if tag not in ("img", "meta", "br", "link", "input"):
            self._open.append((tag, element_id))

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2" and self._in_h2:
            self._in_h2 = False
            self.headings.append("".join(self._h2).strip())
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        if tag == "table":
            self._table = None
        if tag == "script" and self._script is not None:
            self.scripts.append(self._script)
            self._script = None
        while self._open:
            open_tag, element_id = self._open.pop()
            if element_id:
                self.text_of[element_id] = "".join(self._texts[element_id]).strip()
            if open_tag == tag:
                break

    def handle_data(self, text: str) -> None:
        if self._script is not None:
            self._script["body"] += text
            return
        if self._in_h2:
            self._h2.append(text)
        if self._cell is not None:
            self._cell.append(text)
        for _, element_id in self._open:
            if element_id:
                self._texts[element_id].append(text)


def parse(html: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(html)
    parser.close()
    return parser


def figure_traces(html: str, div_id: str) -> list[dict]:
    """The trace list a figure's `Plotly.newPlot("div_id", [...], …)` call draws."""
    call = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*\[', html)
    assert call is not None, f"no figure {div_id}"
    traces, _ = json.JSONDecoder().raw_decode(html, call.end() - 1)
    return traces


def confusion_counts(page: ReportParser) -> list[list[int]]:
    """The counts the report embeds as JSON for readers' programs."""
    block = next(s for s in page.scripts if s.get("id") == "confusion-counts")
    return json.loads(block["body"])["counts"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shipped() -> checkpoints.LoadedCheckpoint:
    return checkpoints.load_checkpoint(SHIPPED)


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    return data.load_split("mnist", "test", data_root=shared_datasets, download=False)


@pytest.fixture(scope="module")
def oracle(shipped, mnist_test) -> np.ndarray:
    """The shipped model's answers, from a plain forward pass normalized by the card's numbers."""
    norm = shipped.card.normalization
    mean = torch.tensor(norm["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"]).view(1, -1, 1, 1)
    answers = []
    with torch.no_grad():
        shipped.model.eval()
        for start in range(0, len(mnist_test), 1000):
            x = mnist_test.images[start : start + 1000].float() / 255
            answers.append(shipped.model((x - mean) / std).argmax(dim=1))
    return torch.cat(answers).numpy()


@pytest.fixture(scope="module")
def built(shipped, mnist_test, one_torch_thread) -> str:
    pred = metrics.predict(shipped.model, mnist_test)
    card = shipped.card
    facts = report.ModelFacts(card.name, card.architecture, False, card)
    return report.build_report(shipped.model, facts, mnist_test, pred)


@pytest.fixture(scope="module")
def page(built: str) -> ReportParser:
    return parse(built)


# --------------------------------------------------------------------------- the report's content


def test_every_section_is_there_in_order_with_its_heading(page: ReportParser) -> None:
    assert page.sections == [sid for sid, _ in report.SECTIONS]
    assert page.headings == [heading for _, heading in report.SECTIONS]
    links = [value for tag, key, value in page.references if tag == "a"]
    assert links == [f"#{sid}" for sid, _ in report.SECTIONS]
    assert "untrained" not in page.by_id
    assert "lenet5-mnist" in page.text_of["card-table"]


def test_it_is_self_contained_plotly_js_once_and_no_url(built: str, page: ReportParser) -> None:
    external = [r for r in page.references if not r[2].startswith(("#", "data:image/png;base64,"))]
    assert external == []
    assert not re.search(r"<script[^>]*\bsrc=", built, flags=re.I)
    assert not re.search(r"<link\b", built, flags=re.I)
    assert "@import" not in built
    assert "url(" not in built.split("</style>")[0]
    library = [s for s in page.scripts if len(s["body"]) > 1_000_000]
    assert len(library) == 1
    assert "plotly.js" in library[0]["body"][:2000]
    calls = [s for s in page.scripts if "Plotly.newPlot" in s["body"]]
    assert len(calls) == len(page.graph_divs) == 9  # 2 curves, filters, 5 images, confusion
    assert len(built) < 7_000_000


def test_the_accuracy_printed_is_sklearns(page: ReportParser, mnist_test, oracle) -> None:
    accuracy = accuracy_score(mnist_test.labels.numpy(), oracle)
    assert float(page.by_id["measured-accuracy"]["data-value"]) == pytest.approx(accuracy, abs=0)
    assert page.text_of["measured-accuracy"] == f"{100 * accuracy:.2f} %"
    right = int((oracle == mnist_test.labels.numpy()).sum())
    assert f"{right:,} of 10,000 test images right" in page.text_of["card-table"]


def test_the_card_shows_what_made_the_model(page: ReportParser, shipped) -> None:
    card = shipped.card
    rows = dict(page.tables["card-table"])
    assert rows["Accuracy on the card"] == f"{100 * card.test_accuracy:.2f} %"
    assert rows["Trained on"] == card.dataset == "mnist"
    assert rows["Epochs"] == str(len(card.history)) == "8"
    assert rows["Created"] == card.created
    assert rows["Made by"] == card.command
    assert rows["Architecture"] == "lenet5"


def test_the_confusion_counts_are_sklearns(page: ReportParser, built: str, mnist_test, oracle):
    expected = confusion_matrix(mnist_test.labels.numpy(), oracle, labels=list(range(10)))
    block = next(s for s in page.scripts if s.get("id") == "confusion-counts")
    assert json.loads(block["body"])["classes"] == [str(k) for k in range(10)]
    np.testing.assert_array_equal(np.array(confusion_counts(page)), expected)
    table = page.tables["confusion-table"]
    cells = np.array([[int(c.replace(",", "")) for c in row[1:]] for row in table[1:]])
    np.testing.assert_array_equal(cells, expected)
    heat = figure_traces(built, "fig-confusion")[0]
    np.testing.assert_array_equal(array(heat["z"]), expected)


def test_the_per_class_table_is_sklearns_report(page: ReportParser, mnist_test, oracle) -> None:
    names = [str(k) for k in range(10)]
    expected = classification_report(
        mnist_test.labels.numpy(), oracle, target_names=names, output_dict=True, zero_division=0
    )
    rows = {row[0]: row[1:] for row in page.tables["per-class-table"][1:]}
    for name in [*names, "macro avg", "weighted avg"]:
        want = expected[name]
        assert rows[name] == [
            f"{want['precision']:.3f}",
            f"{want['recall']:.3f}",
            f"{want['f1-score']:.3f}",
            f"{int(want['support']):,}",
        ], name
    # the accuracy as the header shows it: one precision in the whole report
    assert rows["accuracy"][2] == f"{100 * expected['accuracy']:.2f} %"
    measured = page.by_id["measured-accuracy"]
    assert float(measured["data-value"]) == pytest.approx(expected["accuracy"], abs=1e-12)
    assert page.text_of["measured-accuracy"] == rows["accuracy"][2]


def test_the_shape_flow_totals_count_every_parameter(page: ReportParser, shipped) -> None:
    params = sum(p.numel() for p in shipped.model.parameters())
    assert int(page.by_id["total-params"]["data-value"]) == params == 61_706
    rows = page.tables["shape-flow-table"]
    assert rows[0][:6] == ["Layer", "Type", "Input", "Output", "K/S/P", "Params"]
    layers = rows[1:-1]
    leaves = [n for n, m in shipped.model.named_modules() if not list(m.children())]
    assert [row[0] for row in layers] == leaves
    assert sum(int(row[5].replace(",", "")) for row in layers) == params
    conv1 = shipped.model.features.conv1
    mult_adds = 28 * 28 * 6 * 1 * 5 * 5  # H_out·W_out·C_out·C_in·kh·kw
    first = ["features.conv1", "Conv2d", "1×28×28", "6×28×28", "5/1/2", "156", f"{mult_adds:,}"]
    assert layers[0][:7] == first
    assert conv1.weight.numel() + conv1.bias.numel() == 156


def test_the_training_curves_are_the_cards_history(built: str, shipped) -> None:
    history = shipped.card.history
    for metric in ("accuracy", "loss"):
        train, test = figure_traces(built, f"fig-curve-{metric}")
        factor = 100 if metric == "accuracy" else 1
        np.testing.assert_allclose(array(train["x"]), [r["epoch"] for r in history])
        np.testing.assert_allclose(
            array(train["y"]), [factor * r[f"train_{metric}"] for r in history]
        )
        np.testing.assert_allclose(
            array(test["y"]), [factor * r[f"test_{metric}"] for r in history]
        )


def test_the_filters_are_the_first_conv_layers_weights(built: str, shipped) -> None:
    heat = figure_traces(built, "fig-filters")[0]
    records = array(heat["customdata"]).reshape(-1, 4)  # filter, row, col, weight
    records = records[~np.isnan(records).any(axis=1)]
    weights = shipped.model.features.conv1.weight.detach().numpy()[:, 0]
    assert len(records) == weights.size == 150
    f, r, c = (records[:, i].astype(int) for i in range(3))
    np.testing.assert_allclose(records[:, 3], weights[f, r, c], rtol=1e-6)


def test_the_activations_are_conv2d_of_the_first_image_of_each_class(
    built: str, page: ReportParser, shipped, mnist_test, oracle
) -> None:
    labels = mnist_test.labels.numpy()
    firsts = [int(np.argmax(labels == k)) for k in range(5)]
    for index in firsts:
        shown = page.by_id[f"example-{index}"]
        assert int(shown["data-true"]) == labels[index]
        assert int(shown["data-predicted"]) == oracle[index]
    pngs = [v for t, k, v in page.references if t == "img"]  # one per example, in class order
    for index, uri in zip(firsts, pngs, strict=True):
        picture = PIL.Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        np.testing.assert_array_equal(np.array(picture), mnist_test.images[index, 0].numpy())
    conv1 = shipped.model.features.conv1
    norm = shipped.card.normalization
    for index in firsts:
        x = (mnist_test.images[index : index + 1].float() / 255 - norm["mean"][0]) / norm["std"][0]
        with torch.no_grad():
            expected = F.conv2d(x, conv1.weight, conv1.bias, padding=2)[0].numpy()  # (6, 28, 28)
        heat = figure_traces(built, f"fig-activations-{index}")[0]
        records = array(heat["customdata"]).reshape(-1, 4)  # channel, y, x, value
        records = records[~np.isnan(records).any(axis=1)]
        assert len(records) == expected.size
        ch, y, x_ = (records[:, i].astype(int) for i in range(3))
        np.testing.assert_allclose(records[:, 3], expected[ch, y, x_], atol=1e-4)


def test_a_layers_atlas_goes_in_with_the_numbers_of_a_plain_forward_pass(
    shipped, mnist_test, one_torch_thread
) -> None:
    """The Channels page's "Add to report": the layer's sheet as a PNG, a table whose top
    activations are the maxima of a plain forward pass per image, and the CLI's JSON record."""
    from tests.test_atlas import brute_force

    sample = data.take_first(mnist_test, 300)
    model = shipped.model
    layer = channels.default_layer(
        channels.layer_kinds(model, probe.shape_flow(model, (1, 28, 28)))
    )
    found = atlas.compute_atlas(model, sample, layer, top=4)
    part = report.AtlasPart(found, sample.images.numpy(), sample.info.classes)
    facts = report.ModelFacts(shipped.card.name, shipped.card.architecture, False, shipped.card)
    html = report.build_report(model, facts, sample, metrics.predict(model, sample), atlases=[part])
    page = parse(html)
    assert "channel-atlas" in page.sections
    assert page.by_id[f"atlas-{layer}"]["data-layer"] == layer
    maxima = brute_force(model, sample, atlas.plan_layer(model, layer).values).max(axis=(0, 2))
    rows = page.tables[f"atlas-table-{layer}"][1:]
    assert [int(r[0]) for r in rows] == list(range(found.channels))
    for row, expected in zip(rows, maxima, strict=True):
        assert float(row[1]) == pytest.approx(expected, rel=1e-3)  # printed to 4 digits
    record = next(s for s in page.scripts if "atlas-data" in s.get("class", ""))
    assert json.loads(record["body"]) == atlas.to_json(found)
    sheet = page.by_id[f"atlas-sheet-{layer}"]["src"]  # an inline PNG of every channel
    picture = PIL.Image.open(io.BytesIO(base64.b64decode(sheet.split(",", 1)[1])))
    title = f"{layer}: {found.channels} channels"
    expected = atlas_sheet.sheet(found, part.images, title=title, classes=part.classes)
    assert np.array_equal(np.asarray(picture.convert("RGB")), np.asarray(expected))


def test_without_an_atlas_the_section_says_how_to_add_one(page: ReportParser) -> None:
    assert "Add to report" in page.text_of.get("channel-atlas", "")


def representations_part(shipped, mnist_test, shared_datasets: Path, probes: bool):
    """The Representations page's map of what the last linear layer reads (PCA of 300 test
    images) and, with `probes`, every layer's probes trained on 600 training images."""
    from dashboard.analysis import projections
    from dashboard.analysis import representations as rep

    model = shipped.model
    blocks, layer = rep.projector_layers(model, (1, 28, 28))
    test = rep.extract_features(model, mnist_test, blocks, indices=np.arange(300))
    found = projections.project("pca", test.layers[layer], 2)
    report_of_probes = None
    if probes:
        train_split = data.load_split("mnist", "train", data_root=shared_datasets)
        train = rep.extract_features(model, train_split, blocks, indices=np.arange(600))
        report_of_probes = rep.probe_layers(train, test)
    labels = {b.name: b.label for b in blocks}
    classes = tuple(mnist_test.info.classes)
    return report.RepresentationsPart(
        labels[layer], found, test.indices, test.labels, test.predicted, classes,
        probes=report_of_probes, labels=labels,
    )  # fmt: skip


def test_the_representations_map_and_probes_go_in_with_their_numbers(
    shipped, mnist_test, shared_datasets: Path, one_torch_thread
) -> None:
    """The Representations page's "In the HTML report": its 2-D map (every image once, where
    the projection put it) and the probes' table and JSON, equal to the probe report's."""
    part = representations_part(shipped, mnist_test, shared_datasets, probes=True)
    sample = data.take_first(mnist_test, 300)
    facts = report.ModelFacts(shipped.card.name, shipped.card.architecture, False, shipped.card)
    html = report.build_report(
        shipped.model, facts, sample, metrics.predict(shipped.model, sample), representations=part
    )
    page = parse(html)
    assert page.sections == [sid for sid, _ in report.SECTIONS]
    assert "no-probes" not in page.by_id
    points = {}
    for trace in figure_traces(html, "fig-projection"):
        custom = array(trace["customdata"])
        for row, x, y in zip(custom[:, 1], array(trace["x"]), array(trace["y"]), strict=True):
            points[int(row)] = (x, y)
    assert sorted(points) == list(range(300))
    coords = np.array([points[row] for row in range(300)])
    np.testing.assert_allclose(coords, part.projection.coords, rtol=1e-6)
    probes = part.probes
    rows = page.tables["probe-table"][1:]
    assert [r[0] for r in rows] == [part.labels[p.layer] for p in probes.layers]
    assert [float(r[2]) for r in rows] == [round(100 * p.probe_accuracy, 2) for p in probes.layers]
    assert [float(r[3]) for r in rows] == [round(100 * p.knn_accuracy, 2) for p in probes.layers]
    assert [int(r[1].replace(",", "")) for r in rows] == [p.features for p in probes.layers]
    record = next(s for s in page.scripts if s.get("id") == "probe-data")
    assert json.loads(record["body"]) == json.loads(json.dumps(probes.to_json()))
    line = figure_traces(html, "fig-probes")[0]
    assert array(line["y"]).tolist() == pytest.approx(
        [100 * p.probe_accuracy for p in probes.layers]
    )
    text = page.text_of["representations"]
    assert f"{probes.train_images:,} training images" in text
    assert f"{probes.test_images:,} test images" in text


def test_a_map_without_probes_says_how_to_add_them(
    shipped, mnist_test, shared_datasets: Path, one_torch_thread
) -> None:
    part = representations_part(shipped, mnist_test, shared_datasets, probes=False)
    sample = data.take_first(mnist_test, 300)
    facts = report.ModelFacts(shipped.card.name, shipped.card.architecture, False, shipped.card)
    pred = metrics.predict(shipped.model, sample)
    page = parse(report.build_report(shipped.model, facts, sample, pred, representations=part))
    assert "Run the probes" in page.text_of["no-probes"]
    assert "probe-table" not in page.tables
    assert "fig-projection" in page.graph_divs


def test_without_a_map_the_section_says_how_to_add_one(page: ReportParser) -> None:
    assert "In the HTML report" in page.text_of.get("representations", "")
    assert "fig-projection" not in page.graph_divs


def test_an_untrained_architecture_is_labelled_untrained(mnist_test, one_torch_thread) -> None:
    torch.manual_seed(0)
    model = models.build_model("lenet5").eval()
    split = data.take_first(mnist_test, 500)
    facts = report.ModelFacts("lenet5 (untrained)", "lenet5", True, None)
    page = parse(report.build_report(model, facts, split, metrics.predict(model, split)))
    assert page.sections == [sid for sid, _ in report.SECTIONS]
    assert page.text_of["untrained"].startswith("UNTRAINED — random weights")
    assert page.text_of["no-history"].startswith("No history")
    assert dict(page.tables["card-table"])["Trained on"] == "— (untrained)"
    assert report.file_name(facts) == "lenet5-untrained-report.html"
    assert len(page.graph_divs) == 7  # no curves


def test_predictions_of_another_split_are_refused(shipped, mnist_test) -> None:
    pred = metrics.predict(shipped.model, data.take_first(mnist_test, 100))
    facts = report.ModelFacts("x", "lenet5", False, shipped.card)
    with pytest.raises(LensError, match="another split"):
        report.build_report(shipped.model, facts, mnist_test, pred)


def test_text_is_escaped(mnist_test, one_torch_thread) -> None:
    model = models.build_model("lenet5").eval()
    split = data.take_first(mnist_test, 50)
    facts = report.ModelFacts("<script>alert(1)</script>", "lenet5", True, None)
    built = report.build_report(model, facts, split, metrics.predict(model, split))
    assert "<script>alert(1)" not in built
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in built


# --------------------------------------------------------------------------- in Chromium, offline


@pytest.mark.browser
def test_chromium_draws_every_figure_offline(built: str, page: ReportParser, tmp_path: Path):
    from tests.browser import SCREENSHOTS, chromium_page, require_chromium

    require_chromium()
    path = tmp_path / NAME
    path.write_text(built, encoding="utf-8")
    with chromium_page((1300, 900)) as browser:
        errors: list[str] = []
        outside: list[str] = []
        browser.on("pageerror", lambda err: errors.append(str(err)))
        browser.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        def offline(route) -> None:  # the network is off: only the file itself may load
            if route.request.url.startswith(("file:", "data:")):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        browser.route("**/*", offline)
        browser.goto(path.as_uri())
        count = len(page.graph_divs)
        browser.wait_for_function(
            f"() => document.querySelectorAll('.plot-container .main-svg').length >= {count}",
            timeout=60_000,
        )
        drawn = browser.evaluate(
            "() => [...document.querySelectorAll('.plotly-graph-div')]"
            ".filter(d => d._fullLayout && d.querySelector('.main-svg')).map(d => d.id)"
        )
        assert drawn == page.graph_divs
        heat = browser.evaluate(
            "() => document.getElementById('fig-confusion')._fullData[0].z.map(r => [...r])"
        )
        assert heat == confusion_counts(page)
        assert browser.locator("h2").all_inner_texts() == [h for _, h in report.SECTIONS]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.screenshot(path=str(SCREENSHOTS / "report.png"), full_page=True)
    assert errors == []
    assert outside == []


# --------------------------------------------------------------------------- the button


def open_page(page_file: str | None, model_key: str, dataset: str | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if page_file:
        app.switch_page(page_file)
    app.session_state["lens_model"] = model_key
    if dataset:
        app.session_state["lens_dataset"] = dataset
    app.run()
    assert not app.exception, app.exception
    return app


def report_buttons(app: AppTest) -> list:
    return [b for b in app.get("download_button") if b.proto.label == "Build HTML report"]


def test_one_click_on_the_model_page_downloads_the_report(
    deferred: dict, mnist_test, oracle, one_torch_thread
) -> None:
    app = open_page("pages/1_Model.py", "ckpt:trained/lenet5-mnist.safetensors")
    (button,) = report_buttons(app)
    assert button.proto.deferred_file_id  # data made on click, not with the page
    build, mime = deferred[NAME]
    assert mime == "text/html"
    page = parse(build())  # what the click runs, outside the script run as in the server
    assert page.sections == [sid for sid, _ in report.SECTIONS]
    accuracy = accuracy_score(mnist_test.labels.numpy(), oracle)
    assert page.text_of["measured-accuracy"] == f"{100 * accuracy:.2f} %"


def test_the_home_page_offers_the_report_too(deferred: dict) -> None:
    app = open_page(None, "ckpt:trained/lenet5-mnist.safetensors")
    assert len(report_buttons(app)) == 1
    assert NAME in deferred


def test_a_mismatched_dataset_is_a_message_not_a_button(deferred: dict) -> None:
    app = open_page("pages/1_Model.py", "ckpt:trained/lenet5-mnist.safetensors", "cifar10")
    assert report_buttons(app) == []
    assert any("1-channel images" in e.value for e in app.error), [e.value for e in app.error]


@pytest.mark.browser
def test_the_running_app_downloads_the_report(tmp_path: Path) -> None:
    """Home page in Chromium: click, the browser receives the file Streamlit built on click."""
    from tests.browser import (
        assert_no_exception,
        chromium_page,
        require_chromium,
        streamlit_server,
        wait_for_app,
    )

    require_chromium()
    with streamlit_server() as url, chromium_page() as browser:
        browser.goto(f"{url}/?model=lenet5-mnist&dataset=mnist")
        wait_for_app(browser, "Build HTML report", timeout_ms=120_000)
        assert_no_exception(browser)
        with browser.expect_download(timeout=180_000) as download:
            browser.get_by_role("button", name="Build HTML report").click()
        assert download.value.suggested_filename == NAME
        saved = tmp_path / NAME
        download.value.save_as(saved)
    page = parse(saved.read_text(encoding="utf-8"))
    assert page.sections == [sid for sid, _ in report.SECTIONS]
    assert "lenet5-mnist" in page.text_of["card-table"]
