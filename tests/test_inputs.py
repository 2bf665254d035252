"""Choosing and preparing inputs: MNIST-style centring, hostile uploads, canvas drawings,
test-set picks and the before/after-activation pairing, on real MNIST and CIFAR-10 images."""

from __future__ import annotations

import io
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from dashboard import data, models
from dashboard.analysis import inputs, metrics, probe
from dashboard.base.errors import LensError

MNIST = data.dataset_info("mnist")
CIFAR = data.dataset_info("cifar10")


@pytest.fixture(scope="module")
def mnist_test(shared_datasets: Path) -> data.Split:
    return data.load_split("mnist", "test", data_root=shared_datasets)


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    w = image.astype(np.float64)
    ys, xs = np.indices(w.shape)
    return float((ys * w).sum() / w.sum()), float((xs * w).sum() / w.sum())


def ink_box(image: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def encode(image: PIL.Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def one_line_error(raw: bytes, info: data.DatasetInfo = MNIST, name: str = "x.png") -> str:
    with pytest.raises(LensError) as caught:
        inputs.prepare_upload(raw, info, digits=True, name=name)
    message = str(caught.value)
    assert message
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- MNIST centring


def test_mnist_centring_of_shifted_and_padded_real_digits(mnist_test: data.Split) -> None:
    for index in range(12):
        digit = mnist_test.images[index, 0].numpy()
        canvas = np.zeros((90, 130), dtype=np.uint8)
        canvas[51 : 51 + 28, 7 : 7 + 28] = digit  # far off centre, inside a big margin
        centred = inputs.mnist_center(canvas)
        assert centred.shape == (28, 28)
        assert centred.dtype == np.uint8
        cy, cx = centre_of_mass(centred)
        assert abs(cy - 14) <= 1, (index, cy)
        assert abs(cx - 14) <= 1, (index, cx)
        assert max(ink_box(centred)) <= 20
        # MNIST's own digits were made this way: re-centring gives the digit back
        assert correlation(centred, digit) > 0.9, index


def test_mnist_centring_of_an_enlarged_digit(mnist_test: data.Split) -> None:
    digit = mnist_test.images[7, 0]
    big = F.interpolate(digit[None, None].float(), scale_factor=6, mode="bilinear")[0, 0]
    canvas = np.zeros((300, 220))
    canvas[20 : 20 + 168, 40 : 40 + 168] = big.numpy()
    centred = inputs.mnist_center(canvas)
    cy, cx = centre_of_mass(centred)
    assert abs(cy - 14) <= 1
    assert abs(cx - 14) <= 1
    assert max(ink_box(centred)) == 20  # the longer side of the ink fills the 20-pixel box
    assert correlation(centred, digit.numpy()) > 0.9


def test_no_ink_is_a_one_line_error() -> None:
    with pytest.raises(LensError, match="no ink"):
        inputs.mnist_center(np.zeros((50, 50)))


def test_canvas_drawing_of_a_real_digit(mnist_test: data.Split) -> None:
    """The canvas hands back RGBA: white strokes, transparent or black elsewhere."""
    digit = mnist_test.images[3, 0]
    big = F.interpolate(digit[None, None].float(), size=(200, 200), mode="bilinear")[0, 0]
    rgba = np.zeros((280, 280, 4), dtype=np.uint8)
    rgba[60:260, 30:230, :3] = 255
    rgba[60:260, 30:230, 3] = big.clamp(0, 255).round().to(torch.uint8).numpy()
    drawn = inputs.canvas_digit(rgba)
    assert drawn is not None
    cy, cx = centre_of_mass(drawn)
    assert abs(cy - 14) <= 1
    assert abs(cx - 14) <= 1
    assert correlation(drawn, digit.numpy()) > 0.9
    black = rgba.copy()  # the same strokes painted over an opaque black background
    black[..., :3] = (rgba[..., 3:] > 0) * rgba[..., 3:]
    black[..., 3] = 255
    assert np.abs(inputs.canvas_digit(black).astype(int) - drawn.astype(int)).max() <= 1


def test_blank_canvas_is_no_input() -> None:
    assert inputs.canvas_digit(None) is None
    assert inputs.canvas_digit(np.zeros((280, 280, 4), dtype=np.uint8)) is None
    black = np.zeros((280, 280, 4), dtype=np.uint8)
    black[..., 3] = 255
    assert inputs.prepare_drawing(black, MNIST) is None


def test_a_colour_model_reads_the_canvas_itself_resized() -> None:
    assert inputs.prepare_drawing(np.zeros((8, 8, 4), dtype=np.uint8), CIFAR) is None  # blank
    canvas = np.zeros((280, 280, 4), dtype=np.uint8)
    canvas[..., 3] = 255
    canvas[:, 140:] = (255, 255, 255, 255)  # the right half painted white
    prepared = inputs.prepare_drawing(canvas, CIFAR)
    assert prepared is not None
    assert prepared.pixels.shape == (3, 32, 32)
    assert (prepared.pixels[:, :, :15] == 0).all()
    assert (prepared.pixels[:, :, 17:] == 255).all()


# --------------------------------------------------------------------------- uploads


def test_png_of_dark_ink_on_paper_is_inverted_and_centred(mnist_test: data.Split) -> None:
    digit = mnist_test.images[0, 0].numpy()
    paper = np.full((140, 100), 235, dtype=np.uint8)  # off-white paper, grey ink
    paper[70:98, 60:88] = 235 - (digit.astype(np.int64) * 200 // 255)
    prepared = inputs.prepare_upload(encode(PIL.Image.fromarray(paper), "PNG"), MNIST, digits=True)
    assert prepared.pixels.shape == (1, 28, 28)
    assert prepared.pixels.dtype == np.uint8
    assert any("inverted" in note for note in prepared.notes)
    assert correlation(prepared.pixels[0], digit) > 0.9
    assert prepared.original.shape == (140, 100, 3)  # shown as uploaded, not inverted
    assert prepared.original[0, 0].tolist() == [235, 235, 235]


def test_light_on_dark_digit_is_not_inverted(mnist_test: data.Split) -> None:
    digit = mnist_test.images[1, 0].numpy()
    prepared = inputs.prepare_upload(encode(PIL.Image.fromarray(digit), "PNG"), MNIST, digits=True)
    assert not any("inverted" in note for note in prepared.notes)
    assert correlation(prepared.pixels[0], digit) > 0.95


def test_fashion_style_gray_upload_is_resized_not_centred() -> None:
    info = data.dataset_info("fashion-mnist")
    image = np.zeros((56, 56), dtype=np.uint8)
    image[:, :28] = 200
    prepared = inputs.prepare_upload(encode(PIL.Image.fromarray(image), "PNG"), info)
    expected = data.preprocess_pil(PIL.Image.fromarray(image), info).numpy()
    assert np.array_equal(prepared.pixels, expected)


def test_real_cifar_jpeg_matches_the_dataset_decoding(shared_datasets: Path) -> None:
    path = next(iter(sorted((shared_datasets / "cifar10-jpg" / "test" / "cat").glob("*.jpg"))))
    prepared = inputs.prepare_upload(path.read_bytes(), CIFAR, name=path.name)
    assert prepared.pixels.shape == (3, 32, 32)
    reference = np.asarray(PIL.Image.open(path).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(prepared.pixels, reference)  # 32×32 already: decoded, not resized
    assert prepared.notes == ("already 32×32",)


def test_jpeg_larger_than_the_model_is_resized() -> None:
    rgb = np.zeros((300, 400, 3), dtype=np.uint8)
    rgb[:, :200] = (250, 10, 10)
    rgb[:, 200:] = (10, 10, 250)
    prepared = inputs.prepare_upload(encode(PIL.Image.fromarray(rgb), "JPEG", quality=95), CIFAR)
    left, right = prepared.pixels[:, :, :12], prepared.pixels[:, :, 20:]
    assert left[0].mean() > 200
    assert left[2].mean() < 40
    assert right[2].mean() > 200
    assert right[0].mean() < 40
    assert "resized from 400×300 to 32×32" in prepared.notes[-1]


def test_animated_gif_uses_the_first_frame() -> None:
    first = PIL.Image.new("L", (20, 20), 0)
    first.paste(255, (5, 5, 15, 15))
    second = PIL.Image.new("L", (20, 20), 255)
    raw = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    assert PIL.Image.open(io.BytesIO(raw)).n_frames == 2
    rgba = inputs.decode_image(raw)
    assert rgba[0, 0, :3].tolist() == [0, 0, 0]
    assert rgba[10, 10, :3].tolist() == [255, 255, 255]


def test_16_bit_png_is_rescaled_not_clamped() -> None:
    gradient = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))
    raw = encode(PIL.Image.fromarray(gradient), "PNG")
    assert PIL.Image.open(io.BytesIO(raw)).mode == "I;16"
    gray = inputs.decode_image(raw)[..., 0]
    assert gray.min() == 0
    assert gray.max() == 255
    expected = np.rint(gradient / 65535 * 255).astype(np.uint8)
    assert np.array_equal(gray, expected)
    assert len(np.unique(gray)) == 256  # a clamp would have left two values, 0..255 saturated


def test_rgba_dark_ink_on_transparency_becomes_light_on_black(mnist_test: data.Split) -> None:
    digit = mnist_test.images[2, 0].numpy()
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)  # black ink, opacity = the digit
    rgba[..., 3] = digit
    prepared = inputs.prepare_upload(encode(PIL.Image.fromarray(rgba), "PNG"), MNIST, digits=True)
    assert any("transparent" in note and "inverted" in note for note in prepared.notes)
    assert correlation(prepared.pixels[0], digit) > 0.95
    assert prepared.original[0, 0].tolist() == [255, 255, 255]  # shown on white


def test_rgba_for_a_colour_model_is_composited_onto_the_mean_colour() -> None:
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[:16, :, :] = (255, 0, 0, 255)  # opaque red top, fully transparent bottom
    prepared = inputs.prepare_upload(encode(PIL.Image.fromarray(rgba), "PNG"), CIFAR)
    mean = np.rint(np.asarray(CIFAR.mean) * 255)
    assert prepared.pixels[:, 0, 0].tolist() == [255, 0, 0]
    assert prepared.pixels[:, 31, 0].tolist() == mean.tolist()


def test_palette_image_with_transparency() -> None:
    image = PIL.Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    image.paste(1, (2, 2, 8, 8))  # a white square on palette entry 0, which is transparent
    raw = encode(image, "PNG", transparency=0)
    assert PIL.Image.open(io.BytesIO(raw)).mode == "P"
    rgba = inputs.decode_image(raw)
    assert rgba[0, 0, 3] == 0
    assert rgba[5, 5].tolist() == [255, 255, 255, 255]
    prepared = inputs.prepare_upload(raw, data.dataset_info("fashion-mnist"))
    assert prepared.pixels[0, 0, 0] == 0  # transparent → black background
    assert prepared.pixels[0, 14, 14] == 255
    assert not any("inverted" in note for note in prepared.notes)


def test_cmyk_jpeg() -> None:
    raw = encode(PIL.Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    prepared = inputs.prepare_upload(raw, CIFAR)
    red, green, blue = (prepared.pixels[c].astype(int) for c in range(3))
    assert red.min() > 240
    assert green.max() < 15
    assert blue.max() < 15


def test_exif_rotated_jpeg_is_turned_upright() -> None:
    stored = np.zeros((20, 40), dtype=np.uint8)  # 40 wide, 20 tall; left half bright
    stored[:, :20] = 255
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    raw = encode(PIL.Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    rgba = inputs.decode_image(raw)
    assert rgba.shape[:2] == (40, 20)  # now 20 wide, 40 tall
    top, bottom = rgba[:20, :, 0].mean(), rgba[20:, :, 0].mean()
    assert top > 240
    assert bottom < 15


def test_one_pixel_image() -> None:
    raw = encode(PIL.Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")
    prepared = inputs.prepare_upload(raw, CIFAR)
    assert prepared.pixels.shape == (3, 32, 32)
    assert prepared.pixels[:, 16, 16].tolist() == [10, 200, 30]
    white = inputs.prepare_upload(encode(PIL.Image.new("L", (1, 1), 255), "PNG"), MNIST)
    assert white.pixels.shape == (1, 28, 28)  # one white pixel is a light ground: inverted


def test_corrupt_and_fake_files_get_one_line_errors(mnist_test: data.Split) -> None:
    png = encode(PIL.Image.fromarray(mnist_test.images[0, 0].numpy()), "PNG")
    assert "could not be decoded" in one_line_error(png[: len(png) // 2])
    assert "not an image" in one_line_error(b"this is a text file, not a picture\n" * 20)
    assert "empty" in one_line_error(b"")
    jpeg = encode(PIL.Image.new("RGB", (64, 64), (90, 90, 90)), "JPEG")
    one_line_error(jpeg[:200], name="cut.jpg")


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming a size, and an empty image stream."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_without_decoding() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    pillows = one_line_error(png_header_only(50_000, 50_000), name="bomb.png")
    assert pillows.startswith("bomb.png claims to be 2,500,000,000 pixels")
    ours = one_line_error(png_header_only(9_000, 9_000), name="bomb.png")
    assert ours == "bomb.png is 9,000×9,000 pixels; images up to 40 megapixels are accepted"
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 50


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_ten_thousand_pixel_jpeg_is_decoded_at_reduced_scale() -> None:
    image = PIL.Image.new("L", (10_000, 10_000), 20)
    image.paste(230, (0, 0, 5_000, 10_000))
    raw = encode(image, "JPEG", quality=80)
    del image
    rgba = inputs.decode_image(raw, "huge.jpg")
    assert max(rgba.shape[:2]) == inputs.WORK_SIDE
    prepared = inputs.prepare_upload(raw, CIFAR)
    assert prepared.pixels[0, :, :14].mean() > 200
    assert prepared.pixels[0, :, 18:].mean() < 40


# --------------------------------------------------------------------------- test-set picks


def test_model_input_equals_the_split_batches(mnist_test: data.Split) -> None:
    batch, _ = next(data.iterate_batches(mnist_test, 8, shuffle=False))
    for index in (0, 5, 7):
        prepared = inputs.test_image(mnist_test, index)
        assert prepared.label == int(mnist_test.labels[index])
        assert torch.equal(inputs.model_input(prepared.pixels, mnist_test.info)[0], batch[index])


def test_class_indices_and_mistakes(mnist_test: data.Split) -> None:
    labels = mnist_test.labels.numpy()
    sevens = inputs.class_indices(labels, 7)
    assert len(sevens) == 1028  # MNIST's test split has 1,028 sevens
    assert (labels[sevens] == 7).all()
    predicted = labels.copy()
    predicted[::97] = (predicted[::97] + 1) % 10  # a fixed set of wrong answers
    probabilities = np.eye(10, dtype=np.float32)[predicted]
    pred = metrics.Predictions(labels, predicted, probabilities, MNIST.classes, "test")
    listed = inputs.mistakes(pred)
    assert [m.index for m in listed] == metrics.misclassified(pred).tolist()
    assert all(m.true == labels[m.index] and m.predicted == predicted[m.index] for m in listed)
    threes = inputs.mistakes(pred, true_class=3)
    assert [m.index for m in threes] == [i for i in metrics.misclassified(pred) if labels[i] == 3]
    assert listed[0].label(MNIST.classes) == f"#0: {labels[0]} → {predicted[0]} (100%)"


def test_parse_index() -> None:
    assert inputs.parse_index("12", 100) == 12
    assert inputs.parse_index(" 0 ", 100) == 0
    assert inputs.parse_index("100", 100) is None
    assert inputs.parse_index("-1", 100) is None
    assert inputs.parse_index("abc", 100) is None
    assert inputs.parse_index(None, 100) is None


def test_input_key_follows_the_pixels(mnist_test: data.Split) -> None:
    a, b = inputs.test_image(mnist_test, 0), inputs.test_image(mnist_test, 1)
    assert a.key != b.key
    assert a.key == inputs.Prepared(a.pixels.copy(), a.original).key


# --------------------------------------------------------------------------- layers


def test_activation_pairing_follows_the_forward_order() -> None:
    def pairs(name: str) -> dict[str, tuple[str, bool] | None]:
        flow = probe.shape_flow(models.build_model(name), models.model_info(name).input_shape)
        out = {}
        for record in inputs.viewable_layers(flow):
            partner = inputs.activation_partner(flow, inputs.layer_key(record))
            out[inputs.layer_key(record)] = partner and (partner.key, partner.direct)
        return out

    lenet = pairs("lenet5")
    assert lenet["features.conv1"] == ("features.relu1", True)
    assert lenet["features.relu1"] is None  # an activation is already "after"
    assert lenet["features.pool1"] is None  # pool → conv: no activation before the next conv
    assert lenet["classifier.fc3"] is None  # the logits
    course = pairs("course-net")  # conv → max-pool → ReLU
    assert course["features.conv1"] == ("features.relu1", False)
    assert course["features.pool1"] == ("features.relu1", True)
    bn = pairs("bn-cnn")  # conv → BN → ReLU; fc → tanh
    assert bn["features.conv1"] == ("features.relu1", True)
    assert bn["classifier.fc1"] == ("classifier.tanh1", True)
    resnet = pairs("resnet18-small")
    assert resnet["layer2.0.conv2"] == ("layer2.0.relu2", True)  # after the residual sum
    assert resnet["layer2.0.downsample.0"] is None  # the next conv comes first


def test_after_activation_applied_before_pooling_matches_the_model(
    mnist_test: data.Split,
) -> None:
    torch.manual_seed(0)
    model = models.build_model("course-net").eval()
    flow = probe.shape_flow(model, (1, 28, 28))
    x = data.normalize(mnist_test.images[:4], MNIST.mean, MNIST.std)
    acts = probe.activations(model, x)
    partner = inputs.activation_partner(flow, "features.conv1")
    after = inputs.after_activation(model, partner, acts["features.conv1"])
    assert torch.equal(after, torch.relu(acts["features.conv1"]))
    pooled = F.max_pool2d(after, 2)
    assert torch.equal(pooled, acts["features.relu1"])  # the model's own relu1 output
    assert torch.equal(acts["features.conv1"], probe.activations(model, x)["features.conv1"])


def test_which_layer_says_dead() -> None:
    lenet = probe.shape_flow(models.build_model("lenet5"), (1, 28, 28))
    assert inputs.dead_layer(lenet, "features.conv1") == "features.relu1"
    assert inputs.dead_layer(lenet, "features.relu1") == "features.relu1"
    assert inputs.dead_layer(lenet, "features.pool1") == "features.pool1"  # pooled ReLU
    assert inputs.dead_layer(lenet, "classifier.fc3") is None  # logits are never "dead"
    course = probe.shape_flow(models.build_model("course-net"), (1, 28, 28))
    assert inputs.dead_layer(course, "features.conv1") == "features.relu1"


def test_batch_channel_stats_in_chunks_equal_one_batch(mnist_test: data.Split) -> None:
    torch.manual_seed(3)
    model = models.build_model("lenet5").eval()
    layers = ["features.relu1", "features.pool2", "classifier.relu2"]
    x = data.normalize(mnist_test.images[:100], MNIST.mean, MNIST.std)
    whole = probe.activations(model, x, layers)
    per_image = sum(t[0].numel() for t in whole.values())  # 4704 + 400 + 84
    for max_values in (10**9, 20 * per_image, 1):  # chunks of 32, of 20, of one image
        chunked = inputs.batch_channel_stats(model, mnist_test, layers, 100, max_values=max_values)
        assert list(chunked) == layers
        for layer in layers:
            expected = probe.channel_stats(whole[layer])
            assert [s.channel for s in chunked[layer]] == [s.channel for s in expected]
            for a, b in zip(chunked[layer], expected, strict=True):
                # float32 convs differ in the last bits between batch sizes
                assert a.mean == pytest.approx(b.mean, rel=1e-5, abs=1e-7)
                assert a.max == pytest.approx(b.max, rel=1e-5, abs=1e-7)
                assert a.zero_fraction == pytest.approx(b.zero_fraction, rel=1e-12)
                assert a.dead == b.dead
    dead = inputs.batch_channel_stats(model, mnist_test, layers, 100)["classifier.relu2"]
    fired = whole["classifier.relu2"].amax(dim=0) > 0
    assert [s.dead for s in dead] == (~fired).tolist()
