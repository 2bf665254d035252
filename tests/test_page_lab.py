"""The Convolution lab under AppTest: the numbers it shows are checked against PyTorch and
plain loops computed here, and the "Any neuron" tab against the model run by a test hook."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from dashboard import data, ui
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT
from tests.test_lab import hooked_output  # a layer's output read by a hook of our own

PAGE = str(REPO_ROOT / "pages" / "8_Convolution_lab.py")
PRESET_X = np.array(
    [[3, 4, 6, 5, 7], [2, 4, 6, 8, 2], [1, 6, 7, 8, 4], [9, 7, 4, 6, 2], [3, 7, 5, 4, 1]]
)
PRESET_K = np.arange(1, 10).reshape(3, 3)


def open_page(tab: str | None = None, **state) -> AppTest:
    app = AppTest.from_file(PAGE, default_timeout=120)
    for key, value in state.items():
        app.session_state[key] = value
    if str(state.get("lens_model", "")).startswith("ckpt:"):
        app.session_state["lens_extra_models"] = [state["lens_model"]]
    if tab is not None:
        app.session_state["lab_tab"] = tab
    app.run()
    assert not app.exception, app.exception
    return app


def loop_conv(x: np.ndarray, k: np.ndarray, padding: int, stride: int = 1) -> np.ndarray:
    padded = np.pad(x, padding)
    kh, kw = k.shape
    out_h = (padded.shape[0] - kh) // stride + 1
    out_w = (padded.shape[1] - kw) // stride + 1
    out = np.zeros((out_h, out_w), dtype=np.int64)
    for y in range(out_h):
        for x_pos in range(out_w):
            for i in range(kh):
                for j in range(kw):
                    out[y, x_pos] += padded[y * stride + i, x_pos * stride + j] * k[i, j]
    return out


def written(window: np.ndarray, kernel: np.ndarray) -> str:
    """The multiply-add the page should print, built here from the padded window."""
    terms = " + ".join(f"{a}·{b}" for a, b in zip(window.ravel(), kernel.ravel(), strict=True))
    return f"{terms} = {int((window * kernel).sum())}"


def codes(app: AppTest) -> list[str]:
    return [c.value for c in app.code]


def test_worked_tab_shows_the_preset_output_and_its_multiply_adds() -> None:
    app = open_page()
    padded, kernel, output = (t.value.to_numpy() for t in app.table[:3])
    expected = loop_conv(PRESET_X, PRESET_K, padding=1)
    by_torch = F.conv2d(
        torch.tensor(PRESET_X, dtype=torch.float64)[None, None],
        torch.tensor(PRESET_K, dtype=torch.float64)[None, None],
        padding=1,
    )[0, 0].numpy()
    assert np.array_equal(output, expected)
    assert np.array_equal(output, by_torch)
    assert np.array_equal(padded, np.pad(PRESET_X, 1))
    assert np.array_equal(kernel, PRESET_K)
    assert "H_out = W_out = ⌊(5 + 2·1 − 1·(3 − 1) − 1) / 1⌋ + 1 = 5" in codes(app)
    assert any("not flipped" in m.value for m in app.markdown)

    window = np.pad(PRESET_X, 1)[1:4, 2:5]
    app.select_slider(key="_lab_step").set_value(7).run()  # output (1, 2)
    assert written(window, PRESET_K) in codes(app)
    assert int((window * PRESET_K).sum()) == expected[1, 2]

    app.select_slider(key="_lab_step").set_value(0).run()
    corner = written(np.pad(PRESET_X, 1)[:3, :3], PRESET_K)
    assert corner == "0·1 + 0·2 + 0·3 + 0·4 + 3·5 + 4·6 + 0·7 + 2·8 + 4·9 = 91"
    assert corner in codes(app)


def test_typed_numbers_with_an_inexact_stride_say_what_goes_wrong() -> None:
    app = open_page(lab_source="typed or pasted")
    typed = np.arange(1, 37).reshape(6, 6) % 7
    text = "\n".join(" ".join(map(str, row)) for row in typed)
    app.text_area(key="_lab_input").input(text).run()
    app.number_input(key="_lab_padding").set_value(0).run()
    app.number_input(key="_lab_stride").set_value(2).run()
    assert not app.exception
    output = app.table[2].value.to_numpy()
    assert np.array_equal(output, loop_conv(typed, PRESET_K, padding=0, stride=2))
    assert "H_out = W_out = ⌊(6 + 2·0 − 1·(3 − 1) − 1) / 2⌋ + 1 = 2" in codes(app)
    warning = app.warning[0].value
    assert "3 / 2 = 1 remainder 1" in warning
    assert "input row 5 never reaches the output" in warning

    app.text_area(key="_lab_input").input("1 2 3\n4 5").run()
    assert not app.exception
    assert "row 2 has 2 values but row 1 has 3" in app.error[0].value


def test_a_patch_of_a_test_image_with_a_sobel_kernel(shared_datasets: Path) -> None:
    app = open_page(lab_source="a patch of a test image", lens_dataset="mnist")
    app.number_input(key="_lab_patch_index").set_value(1).run()
    app.number_input(key="_lab_patch_top").set_value(9).run()
    app.number_input(key="_lab_patch_left").set_value(11).run()
    app.selectbox(key="_lab_kernel_fill").set_value("Sobel x").run()
    assert not app.exception
    split = data.load_split("mnist", "test", data_root=shared_datasets)
    patch = split.images[1, 0, 9:17, 11:19].numpy().astype(np.int64)  # raw 0..255
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    padded, kernel, output = (t.value.to_numpy() for t in app.table[:3])
    assert np.array_equal(padded, np.pad(patch, 1))
    assert np.array_equal(kernel, sobel_x)
    assert np.array_equal(output, loop_conv(patch, sobel_x, padding=1))
    assert app.session_state["lab_kernel"] == "-1 0 1\n-2 0 2\n-1 0 1"
    assert app.selectbox(key="_lab_kernel_fill").value is None  # ready for the next pick


def test_pooling_tab_matches_max_and_avg_pool() -> None:
    app = open_page("Pooling")
    x = torch.tensor([[3, 4, 6, 5], [2, 4, 6, 8], [1, 6, 7, 8], [9, 7, 4, 6]], dtype=torch.float64)
    _, max_table, avg_table = (t.value.to_numpy() for t in app.table[:3])
    assert np.array_equal(max_table, F.max_pool2d(x[None, None], 2)[0, 0].numpy())
    assert np.array_equal(avg_table, F.avg_pool2d(x[None, None], 2)[0, 0].numpy())
    assert "max(3, 4, 2, 4) = 4" in codes(app)
    app.radio(key="_lab_pool_kind").set_value("avg").run()
    app.select_slider(key="_lab_pool_step").set_value(3).run()
    assert "(7 + 8 + 4 + 6) / 4 = 25 / 4 = 6.25" in codes(app)


def test_im2col_tab_equals_conv2d() -> None:
    app = open_page("im2col")
    columns = app.dataframe[0].value.to_numpy()
    unfolded = F.unfold(torch.tensor(PRESET_X, dtype=torch.float64)[None, None], 3, padding=1)
    assert np.array_equal(columns, unfolded[0].numpy())
    product = app.dataframe[2].value.to_numpy()
    assert np.array_equal(product[0], loop_conv(PRESET_X, PRESET_K, padding=1).ravel())
    assert "Equal to PyTorch's" in app.success[0].value


def test_channels_tab_adds_partial_results() -> None:
    app = open_page("Channels & 1×1")
    first, second, total = (t.value.to_numpy() for t in app.table[:3])
    assert np.array_equal(first, loop_conv(PRESET_X, PRESET_K, padding=1))
    x = np.array([[1, 0, 0, 0, 1], [0, 1, 0, 1, 0], [0, 0, 1, 0, 0], [0, 1, 0, 1, 0]])
    x = np.vstack([x, x[:1]])  # the X pattern of the second channel
    assert np.array_equal(second, loop_conv(x, np.array([[1, 0, -1]] * 3), padding=1))
    assert np.array_equal(total, first + second)
    assert f"91 + ({second[0, 0]}) = {91 + second[0, 0]}".replace("-", "−") in codes(app)
    assert any("16,384 + 36,864 + 16,384 = 69,632 weights" in c for c in codes(app))


def shown_numbers(app: AppTest) -> tuple[float, float]:
    block = next(c for c in codes(app) if c.startswith("computed by hand"))
    by_hand = float(re.search(r"computed by hand\s+(\S+)", block).group(1))
    model_value = float(re.search(r"model's activation\s+(\S+)", block).group(1))
    assert block.rstrip().endswith("✓")
    return by_hand, model_value


def test_any_neuron_untrained_model_at_the_border(shared_datasets: Path) -> None:
    """The neuron the Activations page would hand over (separate keys): course-net's conv2,
    channel 7, bottom-right corner of its 8×8 map, on test image 3."""
    app = open_page(
        "Any neuron",
        lens_model="arch:course-net",
        lens_dataset="mnist",
        lens_image_index=3,
        lens_neuron_layer="features.conv2",
        lens_neuron_channel=7,
        lens_neuron_y=7,
        lens_neuron_x=7,
    )
    assert any("untrained — random weights" in w.value for w in app.warning)
    # random weights: the model to check against is the page's own, from the shared cache
    cached, _ = ui.load_model(ui.Selection("arch:course-net", "mnist"))
    split = data.load_split("mnist", "test", data_root=shared_datasets)
    x = data.normalize(split.images[3:4], split.info.mean, split.info.std)
    expected = hooked_output(cached, x, "features.conv2")[7, 7, 7].item()
    by_hand, model_value = shown_numbers(app)
    assert model_value == pytest.approx(expected, abs=1e-7)
    assert by_hand == pytest.approx(expected, abs=1e-5)
    assert "= model's activation ✓" in app.success[0].value


def test_any_neuron_of_a_trained_checkpoint_from_the_activations_page(
    lenet5_mnist_checkpoint: Path, shared_datasets: Path
) -> None:
    """The Activations page's NEURON_KEY record opens the neuron; a linear unit too."""
    key = f"ckpt:{lenet5_mnist_checkpoint}"
    app = open_page(
        "Any neuron",
        lens_model=key,
        lens_dataset="mnist",
        lens_image_index=0,
        lens_neuron={"layer": "features.conv1", "channel": 2, "y": 0, "x": 27},
    )
    assert not any("untrained" in w.value for w in app.warning)
    model = checkpoints.load_checkpoint(lenet5_mnist_checkpoint).model.eval()
    split = data.load_split("mnist", "test", data_root=shared_datasets)
    x = data.normalize(split.images[:1], split.info.mean, split.info.std)
    expected = hooked_output(model, x, "features.conv1")[2, 0, 27].item()
    by_hand, model_value = shown_numbers(app)
    assert model_value == pytest.approx(expected, abs=1e-6)
    assert by_hand == pytest.approx(expected, abs=1e-5)
    window = app.table[0].value  # padded cells are the rows above and columns right of 27
    assert list(window.index) == ["-2", "-1", "0", "1", "2"]
    assert list(window.columns) == ["25", "26", "27", "28", "29"]

    app.selectbox(key="_lens_neuron_layer").set_value("classifier.fc3").run()
    app.number_input(key="_lens_neuron_channel").set_value(7).run()
    assert not app.exception
    logits = hooked_output(model, x, "classifier.fc3")
    by_hand, model_value = shown_numbers(app)
    assert model_value == pytest.approx(logits[7].item(), abs=1e-6)
    assert by_hand == pytest.approx(logits[7].item(), abs=1e-5)


def test_classic_kernels_tab_draws_the_responses() -> None:
    app = open_page("Classic kernels", lens_model="arch:lenet5", lens_dataset="mnist")
    titles = [chart.proto.spec for chart in app.get("plotly_chart")]
    assert len(titles) == 4
    assert any("Classic edge detectors on this image" in t for t in titles)
    assert any("features.conv1 filters" in t for t in titles)
