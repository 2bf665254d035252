"""The Shape flow page under AppTest, and the grouping helpers behind it (summary.py).

The table must equal `summary.display_rows` of the probe, and the probe's numbers are checked
against two independent sources: torchinfo's per-layer statistics and shapes captured by plain
forward hooks on a real forward pass."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
import torchinfo
from streamlit.testing.v1 import AppTest
from torch import nn

from dashboard import models
from dashboard.analysis import graph, probe, summary
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT
from tests.pages import run_page

PAGE = "pages/3_Shape_flow.py"


def open_page(model_key: str, **state) -> AppTest:
    return run_page(PAGE, extra=True, lens_model=model_key, **state)


def table(app: AppTest) -> list[dict]:
    return app.dataframe[0].value.to_dict("records")


def metrics(app: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in app.metric}


def leaf_shapes(model: nn.Module, shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every leaf call, from plain forward hooks: the oracle."""
    seen: list[tuple[str, tuple[int, ...]]] = []
    handles = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: seen.append((name, tuple(out.shape[1:])))
        )
        for name, module in model.named_modules()
        if name and next(module.children(), None) is None
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return models.build_model("resnet18")


def test_course_net_table_and_totals() -> None:
    app = open_page("arch:course-net")
    model = models.build_model("course-net")
    flow = probe.shape_flow(model, (1, 28, 28))
    assert table(app) == summary.display_rows(flow)
    # independent: plain hooks on a real forward pass, and torchinfo's per-layer counts
    assert [(r["Layer"], r["Output"]) for r in table(app)] == [
        (name, summary.shape_text(shape)) for name, shape in leaf_shapes(model, (1, 28, 28))
    ]
    info = torchinfo.summary(model, input_size=(1, 1, 28, 28), verbose=0)
    conv_and_linear = [i for i in info.summary_list if i.class_name in ("Conv2d", "Linear")]
    rows = [r for r in table(app) if r["Type"] in ("Conv2d", "Linear")]
    assert (
        [r["Params"] for r in rows] == [i.num_params for i in conv_and_linear] == [260, 5020, 3210]
    )
    assert [r["Mult-adds"] for r in rows] == [144_000, 320_000, 3_200]
    shown = metrics(app)
    assert shown["Parameters"] == f"{sum(p.numel() for p in model.parameters()):,}" == "8,490"
    assert shown["Input"] == "1×28×28"
    assert shown["Output"] == "10"
    assert shown["Multiply-adds per image"] == "467,200"
    assert not app.error


def test_input_size_that_breaks_names_the_layer_and_why() -> None:
    app = open_page("arch:course-net")
    app.number_input(key="_shape_h").set_value(32)
    app.number_input(key="_shape_w").set_value(32).run()
    assert not app.exception
    (error,) = app.error
    assert "classifier.fc" in error.value
    assert "Linear" in error.value
    assert "expects 320 features, gets 500" in error.value
    model = models.build_model("course-net")
    with pytest.raises(RuntimeError, match="500"):  # the real forward pass agrees
        model(torch.zeros(1, 1, 32, 32))
    rows = table(app)
    expected = summary.display_rows(probe.shape_flow(model, (1, 32, 32)))
    assert rows[:-1] == expected
    assert rows[-1]["Layer"] == "classifier.fc"
    assert rows[-1]["Output"] == summary.BROKEN_OUTPUT
    assert rows[-1]["Params"] == 3210
    assert "expects 320 features, gets 500" in rows[-1]["Flag"]
    assert metrics(app)["Output"] == "—"
    # the reset button brings back the size the model was built for
    app.button[0].click().run()
    assert not app.error
    assert metrics(app)["Input"] == "1×28×28"


def test_a_division_that_is_not_exact_is_flagged() -> None:
    app = open_page("arch:course-net", shape_h=29, shape_w=29)
    assert not app.error  # 29 → 25 → 12 (one row lost) → 8 → 4: still 320 features
    (warning,) = app.warning
    assert "features.pool1" in warning.value
    assert "not exact" in warning.value
    flagged = {r["Layer"]: r["Flag"] for r in table(app) if r["Flag"]}
    assert list(flagged) == ["features.pool1"]
    assert (
        flagged["features.pool1"]
        == "not exact: (25 − 2 + 2·0) / 2 = 11 r 1, last 1 row/column ignored"
    )


def test_resnet18_table_totals_and_collapsing(resnet18: nn.Module) -> None:
    app = open_page("arch:resnet18")
    flow = probe.shape_flow(resnet18, (3, 224, 224))
    rows = table(app)
    assert rows == summary.display_rows(flow)
    assert [(r["Layer"], r["Output"]) for r in rows] == [
        (n, summary.shape_text(s)) for n, s in leaf_shapes(resnet18, (3, 224, 224))
    ]
    info = torchinfo.summary(resnet18, input_size=(1, 3, 224, 224), verbose=0, depth=10)
    convs = [i for i in info.summary_list if i.class_name == "Conv2d"]
    assert [r["Mult-adds"] for r in rows if r["Type"] == "Conv2d"] == [i.macs for i in convs]
    assert metrics(app)["Parameters"] == f"{sum(p.numel() for p in resnet18.parameters()):,}"
    assert metrics(app)["Parameters"] == f"{info.total_params:,}" == "11,689,512"
    assert metrics(app)["Multiply-adds per image"] == "1.81 G"

    # Fold layer3 by name: one row carrying everything inside it
    app.multiselect(key="_shape_fold").select("layer3").run()
    assert not app.exception
    folded = table(app)
    layer3 = next(r for r in folded if r["Layer"] == "layer3")
    assert layer3["Params"] == sum(p.numel() for p in resnet18.layer3.parameters()) == 2_099_712
    inside = [r for r in rows if r["Layer"].startswith("layer3.")]
    assert layer3["Mult-adds"] == sum(r["Mult-adds"] for r in inside)
    assert (layer3["Input"], layer3["Output"]) == ("128×28×28", "256×14×14")
    assert layer3["Type"] == f"Sequential ({len(inside)} layers)"
    assert not any(r["Layer"].startswith("layer3.") for r in folded)
    assert len(folded) == len(rows) - len(inside) + 1

    # Detail "top level": the four stages as rows; parameter totals unchanged
    app.multiselect(key="_shape_fold").unselect("layer3")
    app.select_slider(key="_shape_detail").set_value(0).run()
    assert not app.exception
    top = table(app)
    assert [r["Layer"] for r in top] == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
        "avgpool", "flatten", "fc",
    ]  # fmt: skip
    assert sum(r["Params"] for r in top) == sum(p.numel() for p in resnet18.parameters())
    assert sum(r["Mult-adds"] for r in top) == flow.mult_adds


def test_every_registry_model_and_a_torchvision_model_render() -> None:
    names = [*models.model_names(), "tv:mobilenet_v3_small"]
    app = open_page("arch:course-net")
    app.session_state["lens_extra_models"] = ["arch:tv:mobilenet_v3_small"]
    for name in names:
        app.session_state["lens_model"] = f"arch:{name}"
        app.run()
        assert not app.exception, (name, app.exception)
        assert not app.error, name
        shape = models.model_info(name).input_shape
        assert metrics(app)["Input"] == summary.shape_text(shape), name
        assert app.session_state["lens_model"] == f"arch:{name}"
        built = models.build_model(name)
        assert metrics(app)["Parameters"] == f"{sum(p.numel() for p in built.parameters()):,}"
        assert app.get("plotly_chart"), name


# ---------------------------------------------------------------------------------------------
# The pure helpers


def test_collapsed_rows_without_folding_are_the_display_rows(resnet18: nn.Module) -> None:
    flow = probe.shape_flow(resnet18, (3, 224, 224))
    assert summary.collapsed_rows(flow) == summary.display_rows(flow)
    assert summary.visible_records(flow) == flow.leaves
    blocks = summary.collapsed_rows(flow, depth=1)
    assert [r["Layer"] for r in blocks if r["Type"].startswith("BasicBlock")] == [
        f"layer{s}.{b}" for s in range(1, 5) for b in (0, 1)
    ]
    # a folded block keeps the flags raised inside it
    layer2_0 = next(r for r in blocks if r["Layer"] == "layer2.0")
    assert (
        layer2_0["Flag"] == "downsample.0: stride 2 > kernel 1: 1 row/column in every 2 never read"
    )
    for depth in range(summary.max_depth(flow) + 1):
        rows = summary.collapsed_rows(flow, depth=depth)
        assert sum(r["Params"] for r in rows) == flow.params_total, depth
        assert sum(r["Mult-adds"] for r in rows) == flow.mult_adds, depth


def test_diagram_draws_blocks_for_resnet_and_every_conv_for_vgg(resnet18: nn.Module) -> None:
    plan = summary.diagram_layers(probe.shape_flow(resnet18, (3, 224, 224)))
    assert [name for name, _ in plan.layers] == [
        "input", "conv1", "maxpool", "layer1.0", "layer1.1", "layer2.0", "layer2.1",
        "layer3.0", "layer3.1", "layer4.0", "layer4.1", "avgpool", "flatten", "fc",
    ]  # fmt: skip
    assert plan.layers[-4] == ("layer4.1", (512, 7, 7))
    vgg = models.build_model("vgg13")
    plan = summary.diagram_layers(probe.shape_flow(vgg, (3, 224, 224)))
    convs = [name for name, m in vgg.named_modules() if isinstance(m, nn.Conv2d)]
    drawn = [name for name, _ in plan.layers]
    assert all(name in drawn for name in convs)
    assert len(plan.layers) <= 24
    assert not any("ReLU" in type(dict(vgg.named_modules())[n]).__name__ for n in drawn[1:])
    # a tight budget folds one level more: the top-level stages
    plan = summary.diagram_layers(probe.shape_flow(resnet18, (3, 224, 224)), max_blocks=12)
    assert plan.depth == 0
    assert [name for name, _ in plan.layers][3:7] == ["layer1", "layer2", "layer3", "layer4"]


def test_rows_csv_round_trips_and_counts_read_short() -> None:
    flow = probe.shape_flow(models.build_model("course-net"), (1, 28, 28))
    rows = summary.display_rows(flow)
    back = list(csv.DictReader(io.StringIO(summary.rows_csv(rows))))
    assert [r["Layer"] for r in back] == [r["Layer"] for r in rows]
    assert [int(r["Params"]) for r in back] == [r["Params"] for r in rows]
    assert back[0]["Formula"] == rows[0]["Formula"] == "⌊(28 − 5 + 2·0) / 1⌋ + 1 = 24"
    assert summary.count_text(467_200) == "467,200"
    assert summary.count_text(1_814_073_344) == "1.81 G"
    assert summary.count_text(133_047_848) == "133.0 M"
    assert json.loads(json.dumps(rows)) == rows  # plain values only: ready for any export


# ---------------------------------------------------------------------------------------------
# The graph view


def chart_specs(app: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def block_texts(spec: dict, line: int) -> list[str]:
    """The text lines written on the graph's blocks: 0 names, 1 labels, 2 steps and shapes."""
    return [t["text"] for t in spec["data"] if t.get("mode") == "text"][line]


def test_graph_view_is_the_default_for_resnet18_small_and_the_switch_keeps_blocks() -> None:
    key = "ckpt:trained/resnet18-small-cifar10.safetensors"
    app = open_page(key)
    assert app.radio(key="_shape_view").value == "Graph"
    (spec,) = chart_specs(app)
    assert spec["layout"]["title"]["text"] == "Dataflow graph at 3×32×32"
    labels = block_texts(spec, 1)
    assert labels.count("<b>Add +</b>") == 8  # every residual sum drawn
    names = block_texts(spec, 0)
    assert [n for n in names if "downsample" in n] == [
        f"layer{s}.0.downsample.0" for s in (2, 3, 4)
    ]
    loaded = checkpoints.load_checkpoint(
        REPO_ROOT / "trained" / "resnet18-small-cifar10.safetensors"
    )
    plan = graph.graph_plan(graph.model_graph(loaded.model, (3, 32, 32)))
    arrows = next(t for t in spec["data"] if t.get("name") == "data")
    assert arrows["x"].count(None) == len(plan.graph.edges)
    assert "32×4×4" not in block_texts(spec, 2)  # the last stage puts out 128×4×4
    assert "ReLU → 128×4×4" in block_texts(spec, 2)

    # the straight line of blocks is one click away, and back
    app.radio(key="_shape_view").set_value("Blocks").run()
    assert not app.exception
    assert [s["layout"]["title"]["text"] for s in chart_specs(app)] == [
        "Feature-map flow at 3×32×32"
    ]
    app.radio(key="_shape_view").set_value("Graph").run()
    assert chart_specs(app)[0]["layout"]["title"]["text"] == "Dataflow graph at 3×32×32"

    # folding a stage folds it in the graph too: one block for all of layer2
    app.multiselect(key="_shape_fold").select("layer2").run()
    names = block_texts(chart_specs(app)[0], 0)
    assert "layer2" in names
    assert not any(n.startswith("layer2.") for n in names)


def test_blocks_stay_the_default_for_a_model_without_branches() -> None:
    app = open_page("arch:lenet5")
    assert app.radio(key="_shape_view").value == "Blocks"
    assert chart_specs(app)[0]["layout"]["title"]["text"].startswith("Feature-map flow at")
    app.radio(key="_shape_view").set_value("Graph").run()
    (spec,) = chart_specs(app)
    assert block_texts(spec, 1)[1:3] == ["<b>Conv 5×5, 6</b>", "<b>MaxPool 2/2</b>"]


@pytest.mark.reads_data
def test_feature_maps_join_the_graph_for_the_activations_pages_image() -> None:
    app = open_page("ckpt:trained/lenet5-mnist.safetensors", lens_image_index=7)
    app.radio(key="_shape_view").set_value("Graph").run()
    assert not chart_specs(app)[0]["layout"].get("images")
    app.toggle(key="_shape_graph_maps").set_value(True).run()
    assert not app.exception, app.exception
    assert app.number_input(key="_lens_image_index").value == 7  # the image Activations shows
    (spec,) = chart_specs(app)
    assert (
        "the 4 most active maps of test image 7 (9)" in spec["layout"]["title"]["subtitle"]["text"]
    )
    # input (1 channel) + conv1, pool1, conv2, pool2 (4 each); none beside the linear layers
    assert len(spec["layout"]["images"]) == 1 + 4 * 4
    hover = next(t for t in spec["data"] if t.get("name") == "feature maps")["hovertext"]
    assert hover[1].startswith("features.relu1 · channel ")

    # Another input size than the images': no maps, and the page says why.
    app.number_input(key="_shape_h").set_value(32).run()
    assert not app.exception, app.exception
    assert any("The maps need the test images' own size, 1×28×28" in i.value for i in app.info)
    assert not chart_specs(app)[0]["layout"].get("images")
