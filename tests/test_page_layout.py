"""Page texts that orient the reader, checked with AppTest: where to start, notes that are not
warnings, every 1000-class model on Activations, and text from files shown as text."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from dashboard.analysis import inputs
from tests.conftest import REPO_ROOT

TIMEOUT = 180


def run(page: str, **state: object) -> AppTest:
    app = AppTest.from_file(str(REPO_ROOT / page), default_timeout=TIMEOUT)
    for key, value in state.items():
        app.session_state[key] = value
    return app.run()


def test_home_says_where_to_start() -> None:
    app = run("app.py", lens_model="arch:course-net")
    assert not app.exception, app.exception
    first = [m.value for m in app.markdown if m.value.startswith("**Where to start:**")]
    assert len(first) == 1
    assert "**Activations**" in first[0]


def test_resnets_strided_shortcut_is_a_note_not_a_warning() -> None:
    """A 1×1 stride-2 projection reads every other row by design: an information note that
    names the three shortcuts, and no warning about them."""
    app = run("pages/3_Shape_flow.py", lens_model="arch:resnet18")
    assert not app.exception, app.exception
    shortcuts = "layer2.0.downsample.0, layer3.0.downsample.0, layer4.0.downsample.0"
    notes = [i.value for i in app.info if "standard shortcut" in i.value]
    assert len(notes) == 1
    assert notes[0].startswith(f"**{shortcuts}**: a 1×1 convolution with stride 2")
    assert not any("downsample" in w.value for w in app.warning)
    worked = app.dataframe[1].value  # the formulas and flags, below the layer table
    flagged = worked[worked["Flag"] != ""]
    assert list(flagged["Layer"]) == shortcuts.split(", ")


def test_a_1000_class_model_is_offered_uploads_and_drawings_with_its_own_classes() -> None:
    """alexnet (1000 outputs, 3×224×224) with MNIST selected: no refusal; the test images do
    not fit, so the page offers an upload or a drawing, resized to 3×224×224."""
    app = run("pages/5_Activations.py", lens_model="arch:alexnet", lens_dataset="mnist")
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    source = app.radio(key="_lens_input_source")
    assert source.options == ["upload", "draw"]
    note = next(i.value for i in app.info if "do not fit this model" in i.value)
    assert "resized to the model's 3×224×224" in note
    assert "own 1,000 classes" in note


def test_class_names_of_a_models_own_outputs() -> None:
    imagenet = inputs.class_names(1000, imagenet=True)
    assert (len(imagenet), imagenet[0], imagenet[207], imagenet[999]) == (
        1000,
        "tench",
        "golden retriever",
        "toilet tissue",
    )
    assert inputs.class_names(1000) == tuple(f"class {i}" for i in range(1000))
    assert inputs.class_names(3, ("cat", "dog", "bird")) == ("cat", "dog", "bird")
    own = inputs.own_input((3, 224, 224), imagenet, imagenet=True)
    assert (own.channels, own.size, own.mean, own.std) == (
        3,
        224,
        inputs.IMAGENET_MEAN,
        inputs.IMAGENET_STD,
    )


def test_the_confusion_page_refuses_a_dataset_whose_classes_are_not_the_models() -> None:
    app = run("pages/6_Confusion_matrix.py", lens_model="arch:alexnet", lens_dataset="cifar10")
    assert not app.exception, app.exception
    (error,) = app.error
    assert "1000 outputs" in error.value
    assert "10 classes" in error.value
