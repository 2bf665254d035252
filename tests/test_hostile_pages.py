"""The pages handed hostile input, under AppTest: odd and broken images on the Activations page,
broken checkpoints on the Model page, a checkpoint with the wrong number of classes on every
page, and the Train page's impossible settings, bad folders, bad names and a real full disk.
Each case works (showing what it did) or shows one line; none shows a traceback."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from streamlit.testing.v1 import AppTest

from dashboard import data, models, training
from dashboard.analysis import inputs
from dashboard.base import images, paths, settings
from dashboard.models import checkpoints
from dashboard.training import runs
from dashboard.training.runs import RunSpec
from tests.pages import run_page
from tests.test_hostile_checkpoints import card, fill, tiny_disk, tree_digest
from tests.test_hostile_cli import write_pngs
from tests.test_page_train import run_until_done

SHIPPED = "ckpt:trained/lenet5-mnist.safetensors"


@pytest.fixture(autouse=True)
def private_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Saved runs, uploads and decoded folders go to temporary folders; the app may read
    image folders under tmp_path (as if the server's owner allowed it)."""
    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(settings.CONFIG_ENV, str(tmp_path / "config"))
    (tmp_path / "config").mkdir()
    settings.settings_path().write_text(json.dumps({"allowed_roots": [str(tmp_path)]}))
    return tmp_path / "runs"


def page(script: str, model_key: str = SHIPPED, **state) -> AppTest:
    extra = model_key.startswith("ckpt:") and model_key != SHIPPED
    return run_page(script, extra=extra, lens_model=model_key, **state)


def errors(app: AppTest) -> list[str]:
    return [e.value for e in app.error]


def one_error(app: AppTest) -> str:
    assert not app.exception, app.exception
    found = errors(app)
    assert len(found) == 1, found
    assert "\n" not in found[0]
    return found[0]


def chart_titles(app: AppTest) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in app.get("plotly_chart")]


def noted(app: AppTest, notes: list[str]) -> bool:
    """Whether the page's captions say every one of an image's preparation notes."""
    shown = "\n".join(captions(app)).replace("\\", "")  # the page escapes Markdown
    return all(f"{note[0].upper()}{note[1:]}." in shown for note in notes)


def captions(app: AppTest) -> list[str]:
    return [c.value for c in app.caption]


def encode(image: PIL.Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# --- images on the Activations page ------------------------------------------------------------


def digit_like(mode: str = "L") -> PIL.Image.Image:
    """A dark stroke on a light ground, the way a photographed digit looks."""
    image = PIL.Image.new("L", (60, 80), 235)
    image.paste(20, (25, 10, 35, 70))
    return image.convert(mode)


def hostile_images() -> dict[str, tuple[bytes, str | None]]:
    """name → (file bytes, the one-line error expected, or None when it must work)."""
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[10:30, 17:23] = (0, 0, 0, 255)  # black ink on full transparency
    la = PIL.Image.fromarray(rgba[..., 3]).convert("LA")
    la.putalpha(PIL.Image.fromarray(rgba[..., 3]))
    palette = PIL.Image.new("P", (30, 30), 0)
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.paste(1, (12, 4, 18, 26))
    gif_first, gif_second = digit_like(), PIL.Image.new("L", (60, 80), 0)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # shown rotated 90° clockwise
    sixteen = np.full((50, 50), 60000, dtype=np.uint16)
    sixteen[10:40, 22:28] = 2000
    png = encode(digit_like(), "PNG")
    huge = PIL.Image.new("L", (10_000, 10_000), 230)
    huge.paste(10, (4_000, 1_000, 6_000, 9_000))
    from tests.test_inputs import png_header_only

    return {
        "truncated.png": (png[: len(png) // 2], "truncated.png could not be decoded"),
        "notes.png": (b"a text file named like a picture\n" * 40, "notes.png is not an image"),
        "empty.png": (b"", "empty.png is empty"),
        "bomb.png": (png_header_only(50_000, 50_000), "bomb.png claims to be 2,500,000,000"),
        "big.png": (
            png_header_only(10_000, 10_000),
            "big.png is 10,000×10,000 pixels; images up to 40 megapixels are accepted",
        ),
        "sixteen.png": (encode(PIL.Image.fromarray(sixteen), "PNG"), None),
        "cmyk.jpg": (encode(digit_like("CMYK"), "JPEG", quality=95), None),
        "rgba.png": (encode(PIL.Image.fromarray(rgba), "PNG"), None),
        "la.png": (encode(la, "PNG"), None),
        "palette.png": (encode(palette, "PNG", transparency=0), None),
        "rotated.jpg": (encode(digit_like("RGB"), "JPEG", exif=exif.tobytes()), None),
        "pixel.png": (  # one pixel holds no digit (a colour model takes it: see below)
            encode(PIL.Image.new("L", (1, 1), 255), "PNG"),
            "there is no ink in the image: nothing to recognise",
        ),
        "huge.jpg": (encode(huge, "JPEG", quality=75), None),
        "animated.gif": (
            encode(gif_first, "GIF", save_all=True, append_images=[gif_second], duration=50),
            None,
        ),
    }


def activations_upload(model_key: str = SHIPPED, dataset: str = "mnist") -> AppTest:
    return page(
        "pages/5_Activations.py",
        model_key,
        lens_input_source=inputs.SOURCE_UPLOAD,
        lens_dataset=dataset,
    )


def upload_image(app: AppTest, name: str, raw: bytes) -> AppTest:
    app.file_uploader(key="_act_upload").set_value((name, raw, "image/png")).run()
    assert not app.exception, (name, app.exception)
    return app


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_hostile_images_show_the_model_input_or_one_line(shared_datasets: Path):
    app = activations_upload()
    mnist = data.dataset_info("mnist")
    for name, (raw, expected) in hostile_images().items():
        upload_image(app, name, raw)
        if expected is not None:
            assert one_error(app).startswith(expected), name
            assert not any(t.startswith("What the model sees") for t in chart_titles(app))
            continue
        assert errors(app) == [], (name, errors(app))
        prepared = inputs.prepare_upload(raw, mnist, digits=True, name=name)  # the same steps
        assert {"Original", "What the model sees"} <= set(chart_titles(app)), name
        assert noted(app, prepared.notes), name


def test_a_colour_model_takes_one_pixel_cmyk_and_transparency(shared_datasets: Path):
    cifar = data.dataset_info("cifar10")
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[:16] = (255, 0, 0, 255)  # opaque red over full transparency
    cases = {
        "pixel.png": encode(PIL.Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
        "cmyk.jpg": encode(PIL.Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"),
        "rgba.png": encode(PIL.Image.fromarray(rgba), "PNG"),
    }
    app = activations_upload("ckpt:trained/alexnet-small-cifar10.safetensors", "cifar10")
    for name, raw in cases.items():
        upload_image(app, name, raw)
        assert errors(app) == [], (name, errors(app))
        prepared = inputs.prepare_upload(raw, cifar, name=name)
        assert "What the model sees" in chart_titles(app), name
        assert noted(app, prepared.notes), name


def test_an_image_over_the_size_limit_is_refused_on_the_page(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 2**20)
    raw = encode(digit_like(), "PNG")
    padded = raw + b"\0" * (3 * 2**20)  # a PNG with 3 MB of trailing bytes
    app = upload_image(activations_upload(), "padded.png", padded)
    assert one_error(app) == "padded.png is 3 MB; images up to 1 MB are accepted"


# --- checkpoints on the Model page -------------------------------------------------------------


def model_upload(app: AppTest, filename: str, content: bytes, architecture: str) -> AppTest:
    app.radio[0].set_value("Upload a state dict").run()
    app.file_uploader(key="model_upload").set_value((filename, content, "application/octet-stream"))
    app.selectbox(key="_model_upload_arch").set_value(architecture).run()
    next(b for b in app.button if b.label == "Load and select").click().run()
    assert not app.exception, app.exception
    return app


def state_dict_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def test_broken_checkpoint_uploads_are_one_line_and_select_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    torch.manual_seed(0)
    lenet = models.build_model("lenet5")
    whole = io.BytesIO()
    torch.save(lenet, whole)
    good = checkpoints.save_checkpoint(lenet, card("lenet5"), tmp_path / "good").read_bytes()
    cases = {
        "whole.pt": (
            whole.getvalue(),
            "whole.pt holds a pickled Python object, not a state dict; it was not loaded (that "
            "could run code). Save a state dict instead: torch.save(model.state_dict(), ",
        ),
        "cut.safetensors": (good[: len(good) // 2], "cut.safetensors is not a valid safetensors"),
        "notes.pt": (b"epoch 1: loss 0.3\n", "notes.pt is not a checkpoint: neither a safetens"),
    }
    app = page("pages/1_Model.py")
    before = app.session_state["lens_model"]
    for filename, (content, expected) in cases.items():
        model_upload(app, filename, content, "lenet5")
        assert one_error(app).startswith(expected), filename
        assert app.session_state["lens_model"] == before

    monkeypatch.setattr(checkpoints, "MAX_CHECKPOINT_BYTES", 2**20)
    big = state_dict_bytes(lenet) + b"\0" * 2**20  # 1.2 MB: refused before it is read
    model_upload(app, "big.pt", big, "lenet5")
    assert one_error(app) == "big.pt is 1.2 MB; the limit is 1 MB"
    assert app.session_state["lens_model"] == before
    stored = list((tmp_path / "cache").rglob("*.pt"))
    assert all(p.name != "big.pt" for p in stored)


def hundred_class_checkpoint(folder: Path, card_classes: int = 100) -> Path:
    """A LeNet-5 with 100 outputs whose card names MNIST (or says `card_classes`)."""
    torch.manual_seed(0)
    wide = card("lenet5")
    wide.name = "lenet100"
    wide.model_args = {**wide.model_args, "num_classes": 100}
    wide.classes = [str(i) for i in range(100)]
    path = checkpoints.save_checkpoint(
        models.build_model("lenet5", num_classes=100), wide, folder / "lenet100"
    )
    if card_classes != 100:
        card_path = path.with_suffix(".json")
        text = card_path.read_text().replace('"num_classes": 100', f'"num_classes": {card_classes}')
        card_path.write_text(text)
    return path


def test_a_checkpoint_with_the_wrong_number_of_classes_is_a_clear_message(tmp_path: Path):
    key = "ckpt:" + str(hundred_class_checkpoint(tmp_path))
    activations = page("pages/5_Activations.py", key)
    assert errors(activations) == []  # the test images do not fit; uploads and drawings do
    [note] = [i.value for i in activations.info if "do not fit this model" in i.value]
    assert "lenet100 has 100 outputs, MNIST 10 classes" in note
    confusion = page("pages/6_Confusion_matrix.py", key)
    assert one_error(confusion) == (
        "the model has 100 outputs but the dataset has 10 classes: pick a dataset with 100 "
        "classes or a model trained on this one"
    )
    for script in ("pages/3_Shape_flow.py", "pages/4_Filters.py", "pages/1_Model.py"):
        assert errors(page(script, key)) == [], script  # no data involved: they work

    # A card saying 10 classes beside weights with 100: the mismatch, in one line, everywhere.
    other = tmp_path / "other"
    other.mkdir()
    key = "ckpt:" + str(hundred_class_checkpoint(other, card_classes=10))
    for script in ("pages/5_Activations.py", "pages/1_Model.py", "pages/4_Filters.py"):
        message = one_error(page(script, key))
        assert message.endswith("the file has 100 classes, the model 10"), (script, message)


# --- the Train page ----------------------------------------------------------------------------


def train_page(model_key: str = "arch:course-net", **state) -> AppTest:
    return page("pages/2_Train.py", model_key, **state)


def set_run(app: AppTest, limit: int = 500, epochs: int = 1, **numbers) -> None:
    app.number_input(key="_train_w_epochs").set_value(epochs)
    app.number_input(key="_train_w_limit").set_value(limit)
    app.number_input(key="_train_w_limit_test").set_value(200)
    for key, value in numbers.items():
        app.number_input(key=f"_train_w_{key}").set_value(value)


def start(app: AppTest) -> runs.TrainingRun | None:
    app.button(key="train_start").click().run()
    assert not app.exception, app.exception
    kept = app.session_state["train_runs"] if "train_runs" in app.session_state else []  # noqa: SIM401 (no .get)
    return kept[-1] if kept else None


def folder_state(folder: Path) -> dict:
    return {"lens_dataset": "folder (your own images)", "lens_folder": str(folder)}


def test_bad_folders_are_one_line_and_start_no_run(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    single = tmp_path / "single"
    write_pngs(single / "cats", 5, seed=0)
    for folder, found in ((empty, 0), (single, 1)):
        app = train_page(**folder_state(folder))
        expected = (
            f"image folder {folder} needs at least two class subfolders (found {found}): put "
            "each class's images in its own folder"
        )
        assert one_error(app) == expected
        assert start(app) is None
        assert errors(app) == [expected, expected]  # the dataset line, and Start's
        assert runs.active_runs() == []


def test_unreadable_images_in_a_folder_are_skipped_and_counted_on_the_page(tmp_path: Path):
    root = tmp_path / "shapes"
    write_pngs(root / "a", 10, seed=1)
    write_pngs(root / "b", 10, seed=2)
    (root / "a" / "03.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "b" / "04.png").write_text("not an image at all")
    app = train_page(**folder_state(root))
    assert errors(app) == []
    set_run(app, limit=0)
    start(app)
    run = run_until_done(app)
    assert run.status == runs.FINISHED, run.reason
    assert (run.train_images, run.test_images) == (15, 3)
    shown = next(c for c in captions(app) if "Data: " in c)
    assert shown.startswith("2 unreadable files skipped. Data: train: image folder shapes")
    assert shown.count("1 unreadable files skipped") == 2  # one in each split
    assert "15 train images" in shown
    assert "3 test images" in shown


def test_learning_rate_zero_and_a_batch_larger_than_the_data_run_and_say_so():
    app = train_page()
    set_run(app, limit=300, batch=5000)
    app.number_input(key="_train_w_lr").set_value(0.0)
    start(app)
    run = run_until_done(app)
    assert run.status == runs.FINISHED, run.reason
    notes = captions(app)
    assert "learning rate is 0: the weights will not change" in notes
    assert "batch size 5000 is larger than the 300 training images; using 300" in notes
    torch.manual_seed(0)  # oracle: the seeded initial weights, never moved
    seeded = models.build_model("course-net").state_dict()
    trained = run.result.model.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in seeded.items())


def test_zero_epochs_and_other_impossible_numbers_are_clamped_by_the_widgets():
    """Streamlit clamps a number box to its range (in the browser and on the server): 0 epochs
    becomes 1, a negative learning rate 0; the runs module refuses them anyway (test_runs)."""
    app = train_page()
    for key, typed, kept in (("epochs", 0, 1), ("batch", 0, 1), ("lr", -0.1, 0.0)):
        app.number_input(key=f"_train_w_{key}").set_value(typed).run()
        assert not app.exception, app.exception
        assert app.number_input(key=f"_train_w_{key}").value == kept, key
    assert errors(app) == []


def test_a_run_that_diverged_says_why_and_offers_no_save(shared_datasets: Path):
    """The page's learning rate stops at 10, which does not blow up these models: the run the
    page shows is made here with lr 1e9 (a real run on MNIST whose loss becomes NaN)."""
    train = data.load_split("mnist", "train", data_root=shared_datasets)
    test = data.load_split("mnist", "test", data_root=shared_datasets)
    spec = RunSpec(
        "course-net",
        "mnist",
        training.TrainConfig(epochs=1, lr=1e9, optimizer="sgd"),
        limit_train=512,
        limit_test=200,
    )
    run = runs.start_run(spec, train, test)
    assert run.join(60)
    assert run.status == runs.DIVERGED
    app = train_page(train_runs=[run])
    assert one_error(app) == run.reason
    assert run.reason.startswith("loss became NaN at epoch 1, step ")
    assert "A diverged run is not saved: lower the learning rate and start again." in captions(app)
    assert not [b for b in app.button if b.key == "train_save"]


def test_save_names_cannot_leave_the_runs_folder(private_folders: Path, tmp_path: Path):
    app = train_page()
    set_run(app, limit=300)
    start(app)
    run_until_done(app)
    for name in ("../escape", "/etc/evil", "a/b", ".hidden", "con", "two words"):
        app.text_input(key="_train_w_save_name").input(name).run()
        assert not app.exception, app.exception
        assert len(errors(app)) == 1, (name, errors(app))
        assert not [b for b in app.button if b.key == "train_save"], name
    assert not (tmp_path / "escape.safetensors").exists()
    assert not private_folders.exists() or list(private_folders.iterdir()) == []


def test_a_full_disk_on_save_is_one_line_then_saving_again_works(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    shipped = tree_digest(paths.TRAINED_DIR)
    with tiny_disk(tmp_path / "disk", 256) as disk:
        monkeypatch.setattr(paths, "RUNS_DIR", disk)
        app = train_page()
        set_run(app)
        start(app)
        run = run_until_done(app)
        assert run.status == runs.FINISHED, run.reason
        filler = fill(disk, leave=32 * 1024)  # the weights fit; with their snapshots they do not
        app.text_input(key="_train_w_save_name").input("full").run()
        app.button(key="train_save").click().run()
        assert one_error(app) == (
            f"disk full while saving {disk / 'full.safetensors'} (No space left on device): "
            "free some space and save again"
        )
        assert sorted(p.name for p in disk.iterdir()) == ["filler.bin"]  # no temporary file
        assert app.session_state["lens_model"] == "arch:course-net"  # nothing selected
        assert run.saved_as is None

        filler.unlink()  # free some space and save again
        app.button(key="train_save").click().run()
        assert not app.exception, app.exception
        assert errors(app) == []
        saved = disk / "full.safetensors"
        assert app.session_state["lens_model"] == f"ckpt:{saved}"
        loaded = checkpoints.load_checkpoint(saved).model.state_dict()
        trained = run.result.model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in trained.items())
    assert tree_digest(paths.TRAINED_DIR) == shipped
