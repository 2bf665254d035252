"""The model registry: exact parameter counts, forward shapes, options, torchvision's zoo.

Oracles: parameter counts by hand formula and by the built module; the originals against
torchvision's own classes (same state-dict keys, same outputs with the same weights); the
size arithmetic behind ShapeError against what PyTorch's forward accepts.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from dashboard.base.errors import CheckpointError, LensError, ShapeError, UnknownNameError
from dashboard.models import (
    architectures,
    build_model,
    model_info,
    model_names,
    torchvision_names,
    zoo,
)
from tests.conftest import REPO_ROOT as REPO


def conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_out * c_in * k * k + (c_out if bias else 0)


def fc(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def bn(c: int) -> int:
    return 2 * c


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def vgg13_small_count(divisor: int) -> int:
    widths = [w // divisor for w in (64, 64, 128, 128, 256, 256, 512, 512, 512, 512)]
    convs = sum(
        conv(c_in, c_out, 3) + bn(c_out)
        for c_in, c_out in zip([3, *widths[:-1]], widths, strict=True)
    )
    return convs + fc(widths[-1], widths[-1]) * 2 + fc(widths[-1], 10)


def resnet18_small_count(width: float) -> int:
    widths = [round(w * width) for w in (64, 128, 256, 512)]

    def block(c_in: int, c_out: int) -> int:
        shortcut = conv(c_in, c_out, 1, bias=False) + bn(c_out) if c_in != c_out else 0
        return (
            conv(c_in, c_out, 3, bias=False)
            + conv(c_out, c_out, 3, bias=False)
            + 2 * bn(c_out)
            + shortcut
        )

    stages = sum(
        block(c_in, c_out) + block(c_out, c_out)
        for c_in, c_out in zip([widths[0], *widths[:-1]], widths, strict=True)
    )
    return conv(3, widths[0], 3, bias=False) + bn(widths[0]) + stages + fc(widths[-1], 10)


# (hand formula, the number stated in the design) at each model's defaults
SMALL_COUNTS = {
    "course-net": (conv(1, 10, 5) + conv(10, 20, 5) + fc(320, 10), 8_490),
    "simple-convnet": (conv(1, 30, 5) + fc(30 * 12 * 12, 100) + fc(100, 10), 433_890),
    "lenet5": (conv(1, 6, 5) + conv(6, 16, 5) + fc(400, 120) + fc(120, 84) + fc(84, 10), 61_706),
    "bn-cnn": (conv(1, 32, 5) + bn(32) + fc(32 * 14 * 14, 70) + fc(70, 30) + fc(30, 10), 442_446),
    "alexnet-small": (
        conv(3, 16, 5) + conv(16, 48, 5) + conv(48, 96, 3) + conv(96, 64, 3) + conv(64, 64, 3)
        + fc(64 * 3 * 3, 128) + fc(128, 128) + fc(128, 10),
        245_978,
    ),
    "vgg13-small": (vgg13_small_count(4), 624_474),
    "resnet18-small": (resnet18_small_count(0.25), 701_466),
}  # fmt: skip
ORIGINALS = {
    "alexnet": (torchvision.models.alexnet, 61_100_840),
    "vgg13": (torchvision.models.vgg13, 133_047_848),
    "resnet18": (torchvision.models.resnet18, 11_689_512),
}


Originals = Callable[[str], tuple[nn.Module, nn.Module]]


@pytest.fixture(scope="module")
def original() -> Originals:
    """(ours, torchvision's) at 1000 classes, built once per name and freed after this file."""

    @functools.cache
    def build(name: str) -> tuple[nn.Module, nn.Module]:
        torch.manual_seed(0)
        return build_model(name), ORIGINALS[name][0]()

    return build


def test_registry_lists_every_seed_architecture() -> None:
    assert model_names() == [
        "course-net", "simple-convnet", "lenet5", "bn-cnn", "alexnet", "vgg13", "resnet18",
        "alexnet-small", "vgg13-small", "resnet18-small",
    ]  # fmt: skip
    assert {"alexnet", "resnet18", "mobilenet_v3_small"} <= set(torchvision_names())


@pytest.mark.parametrize("name", SMALL_COUNTS)
def test_small_model_parameter_counts(name: str) -> None:
    by_hand, stated = SMALL_COUNTS[name]
    assert by_hand == stated
    assert count(build_model(name)) == stated


@pytest.mark.parametrize("name", ORIGINALS)
def test_originals_match_torchvision_layer_for_layer(name: str, original: Originals) -> None:
    ours, theirs = original(name)
    assert count(ours) == count(theirs) == ORIGINALS[name][1]
    shapes = [(k, v.shape) for k, v in ours.state_dict().items()]
    assert shapes == [(k, v.shape) for k, v in theirs.state_dict().items()]
    # Same weights, same outputs: torchvision's checkpoints mean the same thing in ours.
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))
    ours.train()


@pytest.mark.parametrize(
    ("name", "widths"),
    [("vgg13-small", 2), ("resnet18-small", 0.5)],
)
def test_width_option_scales_the_small_variants(name: str, widths: float) -> None:
    expected = vgg13_small_count(2) if name == "vgg13-small" else resnet18_small_count(0.5)
    assert count(build_model(name, width=widths)) == expected


def leaf_calls(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """How often each leaf module ran in one forward pass."""
    calls: dict[str, int] = {}

    def hook(qualname: str, *_: object) -> None:
        calls[qualname] = calls.get(qualname, 0) + 1

    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    handles = [m.register_forward_hook(functools.partial(hook, n)) for n, m in leaves]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return {n: calls.get(n, 0) for n, _ in leaves}


@pytest.mark.parametrize("name", model_names())
def test_every_step_is_a_module_called_once(name: str, original: Originals) -> None:
    """Forward hooks see every activation and the flatten, each exactly once, none in place."""
    model = original(name)[0] if name in ORIGINALS else build_model(name)
    assert not [n for n, m in model.named_modules() if getattr(m, "inplace", False)]
    channels, side, _ = model_info(name).input_shape
    side = 64 if name in ORIGINALS else side  # the originals take 64 px, cheaper than 224
    calls = leaf_calls(model.eval(), torch.zeros(1, channels, side, side))
    model.train()
    assert {n: c for n, c in calls.items() if c != 1} == {}
    assert isinstance(model.get_submodule("flatten"), nn.Flatten)
    first = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    assert model_info(name).first_conv == first


def forward_cases() -> Iterator[tuple[str, int]]:
    for name in model_names():
        for size in sorted({28, 32, model_info(name).input_shape[-1]}):
            yield name, size


CANNOT_TAKE = {("alexnet", 28), ("alexnet", 32), ("vgg13", 28)}  # 224-px designs shrink to nothing


@pytest.mark.parametrize(("name", "size"), list(forward_cases()))
def test_forward_shapes(name: str, size: int, original: Originals) -> None:
    info = model_info(name)
    if (name, size) in CANNOT_TAKE:
        with pytest.raises(ShapeError, match=rf"{name} cannot take {size}×{size} inputs"):
            build_model(name, input_size=size)
        return
    # vgg13 takes seconds to build; its input size only decides whether it can take the input.
    cached = name == "vgg13" or (name in ORIGINALS and size == 224)
    model = original(name)[0] if cached else build_model(name, input_size=size)
    assert model.training
    with torch.no_grad():
        out = model(torch.randn(2, info.input_shape[0], size, size))
    assert out.shape == (2, info.num_classes)


@pytest.mark.parametrize("name", ["alexnet-small", "vgg13-small", "resnet18-small"])
def test_small_variants_take_mnist(name: str) -> None:
    model = build_model(name, in_channels=1, input_size=28)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_input_size_sizes_the_first_linear() -> None:
    assert build_model("course-net").classifier.fc.in_features == 320
    assert build_model("course-net", input_size=32).classifier.fc.in_features == 500
    assert build_model("simple-convnet", input_size=32).classifier.fc1.in_features == 30 * 14 * 14
    assert count(build_model("resnet18-small", input_size=28)) == SMALL_COUNTS["resnet18-small"][1]


def test_shape_error_names_the_smallest_size_pytorch_accepts(original: Originals) -> None:
    with pytest.raises(ShapeError) as caught:
        build_model("alexnet", input_size=28)
    assert str(caught.value) == (
        "alexnet cannot take 28×28 inputs: they shrink to nothing at features.5 (MaxPool2d); "
        "use at least 63×63"
    )
    theirs = original("alexnet")[1].eval()
    with torch.no_grad():
        theirs(torch.zeros(1, 3, 63, 63))  # PyTorch agrees that 63 px works …
        with pytest.raises(RuntimeError):
            theirs(torch.zeros(1, 3, 62, 62))  # … and that 62 px does not


def test_size_arithmetic_matches_pytorch() -> None:
    """The sizes behind ShapeError and the first Linear, against real conv and pool layers."""
    layers: list[nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d] = []
    for k, s, p, d in itertools.product(range(1, 6), range(1, 4), range(3), range(1, 3)):
        layers.append(nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d))
        if 2 * p <= k:
            for ceil in (False, True):
                layers.append(nn.MaxPool2d(k, s, p, dilation=d, ceil_mode=ceil))
                layers.append(nn.AvgPool2d(k, s, p, ceil_mode=ceil))
    mismatches = []
    for layer in layers:
        for size in range(1, 9):
            try:
                real = layer(torch.zeros(1, 1, size, size)).shape[-1]
            except RuntimeError:
                real = 0
            if architectures._out_len(layer, size) != real:
                mismatches.append((layer, size, real))
    assert mismatches == []


def test_alexnet_feature_shapes_at_224(original: Originals) -> None:
    model = original("alexnet")[0]
    shapes: list[tuple[int, ...]] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
        for m in model.features
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d))
    ]
    try:
        with torch.no_grad():
            assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1000)
    finally:
        for handle in handles:
            handle.remove()
    assert shapes == [
        (64, 55, 55), (64, 27, 27), (192, 27, 27), (192, 13, 13),
        (384, 13, 13), (256, 13, 13), (256, 13, 13), (256, 6, 6),
    ]  # fmt: skip


def test_lenet5_options_change_the_structure() -> None:
    def kinds(model: nn.Module) -> list[str]:
        return [type(m).__name__ for m in model.modules() if not list(m.children())]

    default = kinds(build_model("lenet5"))
    assert default.count("ReLU") == 4
    assert default.count("MaxPool2d") == 2
    assert "BatchNorm2d" not in default

    sigmoid = build_model("lenet5", activation="sigmoid")
    assert kinds(sigmoid).count("Sigmoid") == 4
    assert "ReLU" not in kinds(sigmoid)
    assert isinstance(sigmoid.features.sigmoid1, nn.Sigmoid)
    assert kinds(build_model("lenet5", activation="tanh")).count("Tanh") == 4

    avg = kinds(build_model("lenet5", pooling="avg"))
    assert avg.count("AvgPool2d") == 2
    assert "MaxPool2d" not in avg

    with_bn = build_model("lenet5", batch_norm=True)
    assert [n for n, _ in with_bn.features.named_children()] == [
        "conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2",
    ]  # fmt: skip
    assert [type(m).__name__ for m in with_bn.classifier] == [
        "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear",
    ]  # fmt: skip
    assert count(with_bn) == 61_706 + bn(6) + bn(16) + bn(120) + bn(84)
    # Values from a command line arrive as strings.
    assert isinstance(build_model("lenet5", batch_norm="true").features.bn1, nn.BatchNorm2d)


def test_bad_options_and_arguments_name_the_allowed_values() -> None:
    with pytest.raises(
        LensError, match="activation='gelu' is not allowed; choose one of relu, sigmoid, tanh"
    ):
        build_model("lenet5", activation="gelu")
    with pytest.raises(LensError, match="width=3 is not allowed; choose one of 4, 1, 2, 8"):
        build_model("vgg13-small", width=3)
    with pytest.raises(LensError, match="batch_norm=1 is not allowed"):
        build_model("lenet5", batch_norm=1)
    with pytest.raises(LensError, match="lenet5 has no option 'dropout'; its options: activation"):
        build_model("lenet5", dropout=0.5)
    with pytest.raises(LensError, match="course-net has no option 'width'; its options: none"):
        build_model("course-net", width=2)
    with pytest.raises(LensError, match="num_classes must be a positive whole number"):
        build_model("lenet5", num_classes=0)
    with pytest.raises(LensError, match="lenet5 has no pretrained weights"):
        build_model("lenet5", pretrained=True)


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError) as caught:
        build_model("lenet")
    message = str(caught.value)
    assert all(name in message for name in model_names())
    assert "tv:NAME" in message
    assert isinstance(caught.value, LensError)
    with pytest.raises(
        UnknownNameError, match=r"unknown torchvision model 'tv:resnet19'.*resnet18"
    ):
        model_info("tv:resnet19")


def test_same_seed_same_weights() -> None:
    for name in ["lenet5", "bn-cnn", "alexnet-small", "vgg13-small", "resnet18-small"]:
        weights = []
        for seed in (7, 7, 8):
            torch.manual_seed(seed)
            weights.append(build_model(name).get_submodule(model_info(name).first_conv).weight)
        assert torch.equal(weights[0], weights[1]), name
        assert not torch.equal(weights[0], weights[2]), name


def test_torchvision_info_from_the_weights_meta() -> None:
    info = model_info("tv:resnet18")
    assert info.description == "ResNet-18, 11.7M params, ImageNet top-1 69.758 %"
    assert (info.input_shape, info.num_classes, info.first_conv) == ((3, 224, 224), 1000, "conv1")
    assert "Deep Residual Learning" in info.origin
    inception = model_info("tv:inception_v3")
    assert inception.input_shape == (3, 299, 299)
    assert inception.first_conv == "Conv2d_1a_3x3.conv"
    assert model_info("tv:regnet_y_400mf").first_conv == "stem.0"  # built with tensor arithmetic


def test_torchvision_models_without_weights() -> None:
    squeeze = build_model("tv:squeezenet1_1", num_classes=10, in_channels=1)
    assert squeeze(torch.randn(2, 1, 64, 64)).shape == (2, 10)
    googlenet = build_model("tv:googlenet")  # one logits tensor in train mode, no aux outputs
    assert isinstance(googlenet(torch.randn(2, 3, 64, 64)), torch.Tensor)
    with torch.device("meta"):  # 88M parameters: their shapes are what matters here
        vit = build_model("tv:vit_b_32", input_size=64, num_classes=10)
        assert vit(torch.randn(2, 3, 64, 64)).shape == (2, 10)  # built for 64 px, not 224


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Path]:
    """An empty torch hub cache; weights land in <hub>/checkpoints as torchvision expects."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        yield tmp_path / "hub"
    finally:
        torch.hub.set_dir(previous)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route every download through a proxy port where nothing listens: refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{port}")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)


def place_weights(hub: Path, tv_name: str, state: dict[str, object]) -> Path:
    weights = torchvision.models.get_model_weights(tv_name).DEFAULT
    path = hub / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def test_pretrained_weights_load_from_the_hub_cache(hub: Path, offline: None) -> None:
    saved = torchvision.models.squeezenet1_1().state_dict()
    path = place_weights(hub, "squeezenet1_1", saved)
    assert path.name == "squeezenet1_1-b8a52dc0.pth"
    loaded = build_model("tv:squeezenet1_1", pretrained=True).state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)

    # A new head for 10 classes, a gray stem that sums the RGB kernels; the rest untouched.
    adapted = build_model("tv:squeezenet1_1", pretrained=True, num_classes=10, in_channels=1)
    head = adapted.classifier[1]
    assert isinstance(head, nn.Conv2d)
    assert head.out_channels == 10
    stem = adapted.state_dict()["features.0.weight"]
    torch.testing.assert_close(stem, saved["features.0.weight"].sum(1, keepdim=True))
    kept = [k for k in saved if not k.startswith(("classifier.1.", "features.0.weight"))]
    assert all(torch.equal(adapted.state_dict()[k], saved[k]) for k in kept)


def test_registry_original_loads_torchvision_weights(hub: Path, offline: None) -> None:
    saved = torchvision.models.resnet18().state_dict()
    place_weights(hub, "resnet18", saved)
    loaded = build_model("resnet18", pretrained=True).state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert build_model("resnet18", pretrained=True, num_classes=10).fc.out_features == 10


def test_offline_without_cached_weights_says_where_to_put_them(hub: Path, offline: None) -> None:
    start = time.monotonic()
    with pytest.raises(LensError) as caught:
        build_model("tv:squeezenet1_1", pretrained=True)
    assert time.monotonic() - start < 5
    assert str(caught.value) == (
        "could not download ImageNet weights for tv:squeezenet1_1 (URL "
        "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth): offline? "
        f"Place the file squeezenet1_1-b8a52dc0.pth in {hub / 'checkpoints'}"
    )
    assert list((hub / "checkpoints").iterdir()) == []  # no half-written file left behind


def test_cached_file_that_would_run_code_is_refused(hub: Path) -> None:
    unsafe = {"features.0.weight": torch.zeros(1), "hook": print}  # print pickles as a global
    place_weights(hub, "squeezenet1_1", unsafe)
    with pytest.raises(CheckpointError, match="is not a plain state dict"):
        build_model("tv:squeezenet1_1", pretrained=True)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep the test output to pytest's report
        pass


@pytest.fixture
def http_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A local HTTP server over a folder: (folder, base URL)."""
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_download_checks_the_hash_in_the_file_name(
    http_dir: tuple[Path, str], tmp_path: Path
) -> None:
    served, base = http_dir
    blob = bytes(range(256)) * 4096
    good = f"blob-{hashlib.sha256(blob).hexdigest()[:8]}.pth"
    (served / good).write_bytes(blob)
    (served / "blob-00000000.pth").write_bytes(blob)
    cache = tmp_path / "checkpoints"
    zoo._download(f"{base}/{good}", cache / good)
    assert (cache / good).read_bytes() == blob
    with pytest.raises(ValueError, match="does not match the SHA-256 prefix 00000000"):
        zoo._download(f"{base}/blob-00000000.pth", cache / "blob-00000000.pth")
    assert sorted(p.name for p in cache.iterdir()) == [good]


def fresh_python(code: str) -> str:
    """What `code` prints in a new interpreter started in the repository (a clean sys.modules)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_home_pages_modules_leave_torchvision_unimported() -> None:
    """torchvision (and the torch._dynamo its ops load) costs ~2 s of the app's first page:
    the registry, the data layer and the home page's modules import it only when they need it
    (the zoo, downloads, decoding image folders)."""
    code = (
        "import sys\n"
        "import dashboard.ui, dashboard.analysis.summary, dashboard.data, dashboard.models\n"
        "from dashboard.models import checkpoints\n"
        "from dashboard.analysis import metrics, probe\n"
        "m = checkpoints.load_checkpoint('trained/lenet5-mnist.safetensors').model\n"
        "probe.shape_flow(m, (1, 28, 28))\n"
        "print(sorted(n for n in ('torchvision', 'sklearn', 'captum') if n in sys.modules))\n"
    )
    assert fresh_python(code) == "[]"
    assert "tv:resnet18" in {f"tv:{n}" for n in torchvision_names()}  # the zoo still there


def test_the_home_page_paints_before_importing_torch() -> None:
    """app.py draws its title and page map from dashboard.ui before anything imports torch
    (seconds on a cold start), so the first page appears while the model list loads."""
    code = (
        "import sys, streamlit, dashboard.ui, dashboard.base.errors\n"
        "import dashboard.analysis.shipped_flows\n"
        "print('torch' in sys.modules)\n"
    )
    assert fresh_python(code) == "False"
    app = (REPO / "app.py").read_text()
    assert app.index("ui.page_overview()") < app.index("ui.sidebar()")  # the sidebar imports it
