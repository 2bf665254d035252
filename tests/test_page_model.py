"""The Model page under AppTest: a checkpoint's card, an untrained model labelled, uploads (a
mismatched state dict shows the report; a pickle that would run code is refused), torchvision's
zoo offline, the data root."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from dashboard import data, models
from dashboard.analysis import metrics
from dashboard.base import paths
from dashboard.models import checkpoints
from tests.pages import run_page

PAGE = "pages/1_Model.py"
REFUSED = "http://127.0.0.1:9"  # nothing listens: a download fails at once instead of leaving


@pytest.fixture(autouse=True)
def offline_and_private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Uploads go to a temporary cache; any download attempt is refused on this machine."""
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, REFUSED)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)


def model_page(model_key: str, extra: bool = False) -> AppTest:
    return run_page(PAGE, extra=extra, lens_model=model_key)


def metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def button(app: AppTest, label: str):
    return next(b for b in app.button if b.label == label)


def texts(app: AppTest) -> list[str]:
    return [m.value for m in app.markdown]


def percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def state_dict_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def test_a_checkpoint_shows_its_card_and_the_accuracy_measured_again(lenet5_mnist_checkpoint):
    key = "ckpt:" + str(lenet5_mnist_checkpoint)
    app = model_page(key, extra=True)
    card = checkpoints.read_card(lenet5_mnist_checkpoint)
    assert metric(app, "Accuracy") == percent(card.test_accuracy)
    assert metric(app, "Epochs") == "1"
    assert metric(app, "Trained on") == "mnist"
    expected_params = sum(p.numel() for p in models.build_model("lenet5").parameters())
    assert metric(app, "Parameters") == f"{expected_params:,}" == "61,706"
    assert card.command in [c.value for c in app.code]
    assert any(c.value.startswith("ConvNet(\n  (features): Sequential(") for c in app.code)
    assert f"**Dataset source:** {card.dataset_source}" in texts(app)
    assert "**10 classes** (the checkpoint's): 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in texts(app)
    assert app.session_state["lens_model"] == key

    app.button(key="model_measure").click().run()
    assert not app.exception, app.exception
    # Oracle: the checkpoint's model on every MNIST test image, outside the app.
    test = data.load_split("mnist", "test")
    expected = metrics.predict(checkpoints.load_checkpoint(lenet5_mnist_checkpoint).model, test)
    measured = next(t for t in texts(app) if t.startswith("**Measured now:"))
    assert measured.startswith(f"**Measured now: {percent(expected.accuracy)}** on 10,000 test")
    # The card's own number: the same model on the test images the command used.
    n = card.training["test_images"]
    head = dataclasses.replace(test, images=test.images[:n], labels=test.labels[:n])
    model = checkpoints.load_checkpoint(lenet5_mnist_checkpoint).model
    assert metrics.predict(model, head).accuracy == card.test_accuracy


def test_an_untrained_architecture_is_labelled_untrained():
    app = model_page("arch:lenet5")
    assert metric(app, "Accuracy") == "untrained — random weights"
    assert [w.value for w in app.warning] == ["untrained — random weights"]
    assert app.subheader[0].value == "lenet5 (untrained)"
    classes = "**10 classes** (mnist's (the model has none of its own)): 0, 1, 2"
    assert any(t.startswith(classes) for t in texts(app))


def open_upload(app: AppTest, content: bytes, filename: str, architecture: str) -> AppTest:
    app.radio[0].set_value("Upload a state dict").run()
    app.file_uploader(key="model_upload").set_value((filename, content, "application/octet-stream"))
    app.selectbox(key="_model_upload_arch").set_value(architecture).run()
    button(app, "Load and select").click().run()
    assert not app.exception, app.exception
    return app


def test_a_mismatched_upload_shows_the_report_and_a_fitting_one_is_selected():
    torch.manual_seed(3)
    lenet = models.build_model("lenet5")
    content = state_dict_bytes(lenet)
    app = model_page("arch:course-net")
    open_upload(app, content, "digits.pt", "course-net")
    assert [e.value for e in app.error] == ["digits.pt does not fit course-net:"]
    report = next(t for t in texts(app) if t.startswith("- "))
    lines = report.split("\n")
    # Oracle: the key sets of the two architectures.
    course = list(models.build_model("course-net").state_dict())
    missing = [k for k in course if k not in lenet.state_dict()]
    assert lines[0] == f"- missing from the file (2): {', '.join(missing)}"
    assert lines[1].startswith(
        f"- unexpected in the file ({len(set(lenet.state_dict()) - set(course))})"
    )
    assert "- shape of features.conv1.weight: file 6×1×5×5, model 10×1×5×5" in lines
    assert app.session_state["lens_model"] == "arch:course-net"  # nothing selected

    app.selectbox(key="_model_upload_arch").set_value("lenet5")
    button(app, "Load and select").click().run()
    assert not app.exception, app.exception
    selected = app.session_state["lens_model"]
    assert selected in app.session_state["lens_extra_models"]
    path = Path(selected.removeprefix("ckpt:"))
    assert path.is_relative_to(paths.cache_dir() / "uploads")
    assert path.parent.name == hashlib.sha256(content).hexdigest()[:16]
    assert [s.value for s in app.success] == [
        "digits.pt loaded as lenet5: now selected on every page. Dataset MNIST, guessed from "
        "the model's shape (1×28×28 images in, 10 classes out), which fits Fashion-MNIST as "
        "well: pick that in the sidebar if the model was trained on it."
    ]
    assert metric(app, "Parameters") == "61,706"
    loaded = checkpoints.load_checkpoint(path).model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in lenet.state_dict().items())


class _RunsCode:
    """Unpickling this would create `target` (if pickle ran it)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_pickle_that_would_run_code_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "code-ran"
    content = pickle.dumps({"features.conv1.weight": _RunsCode(marker)})
    app = open_upload(model_page("arch:lenet5"), content, "evil.pt", "lenet5")
    assert len(app.error) == 1
    message = app.error[0].value
    assert message.startswith("evil.pt")
    assert "\n" not in message
    assert not marker.exists()
    assert app.session_state["lens_model"] == "arch:lenet5"


def test_the_zoo_offline_is_a_clear_message_and_without_weights_is_untrained():
    app = model_page("arch:course-net")
    app.radio[0].set_value("torchvision zoo").run()
    assert app.selectbox(key="_model_zoo_name").value == "resnet18"
    app.button(key="model_zoo_use").click().run()
    assert not app.exception, app.exception
    assert len(app.error) == 1
    shown = app.error[0].value.replace("\\", "")  # the page escapes Markdown in messages
    assert shown.startswith("could not download ImageNet weights for tv:resnet18")
    assert app.session_state["lens_model"] == "arch:course-net"

    app.checkbox(key="_model_zoo_weights").uncheck()
    app.button(key="model_zoo_use").click().run()
    assert not app.exception, app.exception
    assert app.session_state["lens_model"] == "arch:tv:resnet18"
    assert app.subheader[0].value.replace("\\", "") == "tv:resnet18 (untrained)"
    assert metric(app, "Accuracy") == "untrained — random weights"
    assert metric(app, "Parameters") == "11,689,512"


def test_the_dataset_tab_shows_where_the_images_come_from():
    app = model_page("arch:lenet5")
    train = data.load_split("mnist", "train")
    assert f"**Train set:** {train.source}" in texts(app)
    assert metric(app, "Train images") == f"{len(train):,}"  # 60,000; 10,000 in the sample
    assert "**Normalization:** mean (0.1307), std (0.3081) per channel, on the 0–1 scale" in texts(
        app
    )
    # The tests' $CNN_LENS_DATA fixes the data root, as it would for a server: said, not editable
    # (choosing one in the app: tests/test_settings.py).
    field = app.text_input(key="_lens_data_root_fixed")
    assert field.value == str(paths.data_root())
    assert field.disabled


def test_an_upload_adopts_the_dataset_its_shape_says_and_its_accuracy_shows(shared_datasets):
    """A real MNIST LeNet-5 uploaded while the sidebar shows CIFAR-10: like a shipped
    checkpoint, it brings its dataset (MNIST, saying that Fashion-MNIST has the same shape);
    "Measure test accuracy" then fills the Accuracy metric."""
    shipped = paths.TRAINED_DIR / "lenet5-mnist.safetensors"
    app = run_page(PAGE, lens_model="arch:course-net", lens_dataset="cifar10")
    open_upload(app, shipped.read_bytes(), "my-lenet.safetensors", "lenet5")
    assert not app.error, [e.value for e in app.error]
    assert app.session_state["lens_dataset"] == "mnist"
    note = (
        "Dataset MNIST, guessed from the model's shape (1×28×28 images in, 10 classes out), "
        "which fits Fashion-MNIST as well: pick that in the sidebar if the model was trained on it."
    )
    assert [s.value for s in app.success] == [
        f"my-lenet.safetensors loaded as lenet5: now selected on every page. {note}"
    ]
    assert note in [c.value for c in app.sidebar.caption]
    assert metric(app, "Accuracy") == "not measured"
    app.button(key="model_measure").click().run()
    assert not app.exception, app.exception
    # Oracle: the shipped model on every MNIST test image, outside the app.
    test = data.load_split("mnist", "test", data_root=shared_datasets)
    expected = metrics.predict(checkpoints.load_checkpoint(shipped).model, test).accuracy
    assert expected > 0.98
    assert metric(app, "Accuracy") == percent(expected)
    accuracy = next(m for m in app.metric if m.label == "Accuracy")
    assert accuracy.help == "measured now on 10,000 mnist test images"


def test_an_upload_of_one_shape_says_its_dataset_without_doubt():
    shipped = paths.TRAINED_DIR / "resnet18-small-cifar10.safetensors"
    app = run_page(PAGE, lens_model="arch:course-net", lens_dataset="mnist")
    open_upload(app, shipped.read_bytes(), "cifar-resnet.safetensors", "resnet18-small")
    assert app.session_state["lens_dataset"] == "cifar10"
    assert app.success[0].value.endswith(
        "Dataset CIFAR-10: the model's shape says so (3×32×32 images in, 10 classes out)."
    )


def test_a_model_whose_outputs_are_not_the_datasets_classes_is_not_measured(tmp_path):
    """A LeNet-5 with 100 outputs on MNIST's 10 classes: its 'accuracy' would compare labels
    0–9 with answers 0–99, so the page says why instead of offering the measurement."""
    torch.manual_seed(0)
    model = models.build_model("lenet5", num_classes=100)
    card = checkpoints.Card(
        name="lenet5-100", architecture="lenet5", model_args={"num_classes": 100}
    )
    path = checkpoints.save_checkpoint(model, card, tmp_path / "lenet5-100")
    with torch.no_grad():  # oracle: the model's own output width on one MNIST-sized image
        outputs = model.eval()(torch.zeros(1, 1, 28, 28)).shape[1]
    assert outputs == 100
    app = model_page(f"ckpt:{path}", extra=True)
    assert [w.value for w in app.warning] == [
        f"lenet5-100 has {outputs} outputs but MNIST has 10 classes: its accuracy on MNIST "
        f"would mean nothing — pick a dataset with {outputs} classes or a model trained on "
        "this one"
    ]
    assert not [b for b in app.button if b.key == "model_measure"]
    assert not app.error
