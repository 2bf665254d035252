"""Huge input sizes: the shape flow is worked out on meta tensors (shapes without data) when the
input is large, with numbers identical to the real forward pass; a real forward pass that would
need more memory than the stated limit is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dashboard import models
from dashboard.analysis import probe
from dashboard.base import paths
from dashboard.base.errors import ShapeError
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT
from tests.pages import run_page

TV_NAMES = [models.TV_PREFIX + name for name in models.torchvision_names()]
# Built on the CPU because their builders compute with tensors (no meta build); the largest is
# left out: 644 million parameters would take 2.6 GB of the shared test machine.
TOO_BIG_TO_BUILD = {"tv:regnet_y_128gf"}


@pytest.mark.parametrize("name", models.model_names())
def test_meta_flow_equals_the_real_flow_of_every_registry_model(name: str, one_torch_thread):
    model = models.build_model(name).eval()
    shape = models.model_info(name).input_shape
    real = probe.shape_flow(model, shape, device="cpu")
    meta = probe.shape_flow(model, shape, device="meta")
    assert real.broken is None
    assert meta == real  # every record: shapes, parameters, multiply-adds, receptive fields
    assert all(p.device.type == "cpu" for p in model.parameters())  # the model is untouched


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("resnet18-small", (3, 1100, 900)),  # > META_ABOVE_VALUES: meta by default
        ("alexnet-small", (3, 700, 700)),
        ("course-net", (1, 1500, 1500)),  # breaks at the classifier: the same report
        ("course-net", (1, 6, 6)),  # too small for conv2
        ("lenet5", (3, 28, 28)),  # wrong channels
    ],
)
def test_meta_flow_equals_the_real_flow_at_other_shapes(name, shape, one_torch_thread):
    model = models.build_model(name).eval()
    real = probe.shape_flow(model, shape, device="cpu")
    meta = probe.shape_flow(model, shape)
    if torch.Size(shape).numel() <= probe.META_ABOVE_VALUES:
        meta = probe.shape_flow(model, shape, device="meta")
    assert meta.records == real.records
    assert (meta.output_shape, meta.mult_adds, meta.params_total) == (
        real.output_shape,
        real.mult_adds,
        real.params_total,
    )
    assert (meta.broken is None) == (real.broken is None)
    if real.broken is not None:
        assert (meta.broken.layer, meta.broken.type) == (real.broken.layer, real.broken.type)
        assert meta.broken.reason == real.broken.reason


def tv_model(name: str) -> torch.nn.Module:
    """`name` built without allocating its weights where its builder allows."""
    try:
        with torch.device("meta"):
            return models.build_model(name).eval()
    except NotImplementedError:
        if name in TOO_BIG_TO_BUILD:
            pytest.skip(f"{name} computes its layout with tensors and is too big to build here")
        return models.build_model(name).eval()


@pytest.mark.parametrize("name", TV_NAMES)
def test_every_torchvision_model_traces_on_meta_tensors(name: str, one_torch_thread):
    model = tv_model(name)
    shape = models.model_info(name).input_shape
    flow = probe.shape_flow(model, shape, device="meta")
    assert flow.broken is None, flow.broken
    assert flow.output_shape == (1000,)
    assert flow.params_total == sum(p.numel() for p in model.parameters())
    assert flow.mult_adds > 0


def test_a_model_that_cannot_run_on_meta_is_traced_for_real_or_refused(one_torch_thread):
    class NeedsData(torch.nn.Module):
        """A forward pass that reads a value (data-dependent code has no meta version)."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return y * float(y.mean() >= -1e9)

    model = NeedsData()
    small = probe.shape_flow(model, (1, 1100, 1000))  # meta first, then for real
    assert small.broken is None
    assert small.output_shape == (2, 1098, 998)
    refused = probe.shape_flow(model, (1, 5000, 5000))
    assert refused.records == []
    assert refused.broken.reason.startswith("NeedsData cannot be traced on meta tensors (")
    assert refused.broken.reason.endswith(
        "and an input of 1×5,000×5,000 is too large to run for real: at most 16,777,216 values "
        "per image"
    )


def test_a_real_forward_pass_needing_more_than_the_limit_is_refused(one_torch_thread):
    model = models.build_model("course-net").eval()
    flow = probe.shape_flow(model, (1, 6000, 6000))
    # input; conv1 10×5996²; pool1 and relu1 10×2998²; conv2 20×2994²; pool2, relu2 and
    # flatten 20×1497² each; the classifier breaks (it takes 320 features)
    expected = 6000**2 + 10 * 5996**2 + 2 * 10 * 2998**2 + 20 * 2994**2 + 3 * 20 * 1497**2
    assert probe.forward_bytes(flow) == 4 * expected
    with pytest.raises(ShapeError) as caught:
        probe.activations(model, torch.zeros(1, 1, 6000, 6000))
    assert str(caught.value) == (
        "running ConvNet on an image of 1×6,000×6,000 would need about 3.3 GB for its layers' "
        "outputs; the limit is 2.0 GB"
    )
    probe.check_forward_memory(model, (1, 28, 28), batch=256)  # small: no trace, no refusal


# --- the command line ------------------------------------------------------------------------


# `python -m dashboard summary …`, then the child's own peak resident memory on stderr's last line
MEASURED = """
import resource, runpy, sys
sys.argv = ["dashboard", *sys.argv[1:]]
try:
    runpy.run_module("dashboard", run_name="__main__", alter_sys=True)
finally:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, file=sys.stderr)
"""


def run_summary(*argv: str) -> tuple[subprocess.CompletedProcess, int]:
    """(the command's result with stderr's measurement line removed, its peak memory in bytes)"""
    result = subprocess.run(
        [sys.executable, "-c", MEASURED, "summary", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    *lines, peak = result.stderr.splitlines()
    result.stderr = "".join(f"{line}\n" for line in lines)
    return result, int(peak)


def test_summary_of_huge_inputs_takes_no_more_memory_than_a_small_one():
    small, baseline = run_summary("resnet18", "--json")
    assert small.returncode == 0, small.stderr
    huge, peak = run_summary("resnet18", "--input-shape", "3,20000,20000", "--json")
    assert huge.returncode == 0, huge.stderr
    # a real forward pass would take 20000² × 64 channels × 4 bytes = 102 GB for conv1 alone
    assert peak < baseline + 200 * 1024**2, (peak, baseline)
    flow = json.loads(huge.stdout)
    conv1 = next(layer for layer in flow["layers"] if layer["name"] == "conv1")
    assert conv1["output_shape"] == [64, 10000, 10000]  # ⌊(20000 + 6 − 7) / 2⌋ + 1
    assert conv1["mult_adds"] == 64 * 10000 * 10000 * 3 * 7 * 7
    assert flow["output_shape"] == [1000]


@pytest.mark.parametrize("side", [10_000, 20_000, 100_000])
def test_summary_of_course_net_at_huge_sizes_names_the_layer_that_breaks(side: int):
    result, _ = run_summary("course-net", "--input-shape", f"1,{side},{side}", "--json")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    flattened = 20 * ((side - 4) // 2 - 4) // 2 * (((side - 4) // 2 - 4) // 2)
    assert result.stderr.strip().splitlines() == [
        f"summary: classifier.fc breaks: fc expects 320 features, gets {flattened}"
    ]
    flow = json.loads(result.stdout)
    conv2 = next(layer for layer in flow["layers"] if layer["name"] == "features.conv2")
    side2 = (side - 4) // 2 - 4
    assert conv2["mult_adds"] == 20 * side2 * side2 * 10 * 5 * 5


def test_summary_of_an_input_too_big_to_measure_is_one_line():
    result, _ = run_summary("course-net", "--input-shape", "1,10000000,10000000")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "summary: an input of 1×10,000,000×10,000,000 is 100,000,000,000,000 values per image; "
        "shapes are worked out for up to 1,099,511,627,776"
    ]


# --- a card with a large input on the home page -----------------------------------------------


def test_a_card_with_a_large_input_draws_the_home_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """ResNet-18-small's shipped weights with a card saying 3×4096×4096 (the largest side a card
    may state): the layer table comes from meta tensors; a real forward pass at that size would
    hold gigabytes of feature maps."""
    runs = tmp_path / "runs"
    runs.mkdir()
    shipped = paths.TRAINED_DIR / "resnet18-small-cifar10"
    card = json.loads(shipped.with_suffix(".json").read_text())
    card.update(name="big-input", input_shape=[3, 4096, 4096])
    card["model_args"]["input_size"] = 4096
    (runs / "big-input.json").write_text(json.dumps(card))
    (runs / "big-input.safetensors").write_bytes(shipped.with_suffix(".safetensors").read_bytes())
    monkeypatch.setattr(paths, "RUNS_DIR", runs)
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    assert checkpoints.read_card(runs / "big-input.json").problem == ""

    key = "ckpt:" + str(runs / "big-input.safetensors")
    app = run_page("app.py", timeout=300, lens_model=key, lens_dataset="cifar10")
    assert not app.exception
    assert not [e.value for e in app.error]
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Input"] == "3×4096×4096"
    assert metrics["Output"] == "10"
    real_at_32 = probe.shape_flow(checkpoints.load_checkpoint(shipped).model, (3, 32, 32))
    assert metrics["Parameters"] == f"{real_at_32.params_total:,}"
