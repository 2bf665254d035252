"""`python -m dashboard atlas`: the JSON the issue specifies, against an independent forward
pass and the probe's receptive windows; the PNG sheet; failures as one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from dashboard import cli, data
from dashboard.analysis import probe
from dashboard.models import checkpoints
from tests.conftest import REPO_ROOT

# The command reads the test images of the data root the tests point it at.
pytestmark = pytest.mark.reads_data

LENET = REPO_ROOT / "trained" / "lenet5-mnist.safetensors"


def cli_run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse's own checks
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, shared_datasets: Path) -> dict:
    """One real run in a fresh interpreter, as a user types it."""
    out = tmp_path_factory.mktemp("atlas")
    command = [sys.executable, "-m", "dashboard", "atlas", str(LENET), "--layer", "features.conv2"]
    command += ["--top", "5", "--limit", "500", "--visualize", "--steps", "16", "--threads", "1"]
    command += ["--data-root", str(shared_datasets), "--out", str(out), "--json"]
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr
    return {"out": out, "stdout": result.stdout, "stderr": result.stderr}


def test_json_is_the_issue_record_with_true_numbers(run: dict, shared_datasets: Path) -> None:
    payload = json.loads(run["stdout"])
    assert set(payload) == {"layer", "split", "images", "channels"}
    assert (payload["layer"], payload["split"], payload["images"]) == (
        "features.conv2",
        "test",
        500,
    )
    assert [c["channel"] for c in payload["channels"]] == list(range(16))
    # an independent forward pass: the conv2 maps of the first 500 test digits
    model = checkpoints.load_checkpoint(LENET).model
    split = data.take_first(data.load_split("mnist", "test", data_root=shared_datasets), 500)
    x = (split.images.float() / 255 - 0.1307) / 0.3081  # the card's normalization
    maps = probe.activations(model, x, ["features.conv2"])["features.conv2"]  # (500, 16, 10, 10)
    maxima = maps.flatten(2).amax(2).numpy()
    flow = probe.shape_flow(model, (1, 28, 28))
    for channel in payload["channels"]:
        c = channel["channel"]
        assert set(channel) == {"channel", "top", "selectivity", "dead_share"}
        assert len(channel["top"]) == 5
        values = [t["activation"] for t in channel["top"]]
        np.testing.assert_allclose(values, np.sort(maxima[:, c])[::-1][:5], atol=1e-4)
        for t in channel["top"]:
            assert set(t) == {"index", "activation", "position", "box"}
            y, x_ = t["position"]
            assert float(maps[t["index"], c, y, x_]) == pytest.approx(t["activation"], abs=1e-4)
            top, left, bottom, right = t["box"]
            assert (bottom - top, right - left) == (14, 14)
            # the probe's window is clipped and inclusive: the same box inside the image
            clipped = (max(top, 0), max(left, 0), min(bottom, 28) - 1, min(right, 28) - 1)
            assert probe.receptive_window(flow, "features.conv2", y, x_) == clipped
        assert channel["dead_share"] == pytest.approx(float((maxima[:, c] <= 0).mean()))
        assert 0.0 <= channel["selectivity"] <= 1.0


def test_the_sheet_is_written_whole_and_progress_goes_to_stderr(run: dict) -> None:
    files = sorted(p.name for p in run["out"].iterdir())
    assert files == ["lenet5-mnist-features.conv2-atlas.png"]  # no temporary file left
    with PIL.Image.open(run["out"] / files[0]) as image:
        image.load()
        assert image.mode == "RGB"
        assert image.width >= 1000
        assert image.height >= 300
        pixels = np.asarray(image)
    assert pixels.std() > 40  # digits and visualizations, not a blank page
    assert "feature visualization" in run["stderr"]
    assert f"wrote {run['out'] / files[0]}" in run["stderr"]
    assert "Traceback" not in run["stderr"]


def test_text_table_without_json(
    capsys: pytest.CaptureFixture, tmp_path: Path, one_torch_thread: None
) -> None:
    code, out, err = cli_run(
        capsys, "atlas", str(LENET), "--layer", "features.pool1", "--limit", "200",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["channel", "top", "image", "max", "selectivity", "class", "dead"]
    assert len(lines) == 1 + 6 + 1  # header, 6 channels, what the values are
    assert lines[-1] == "features.pool1: features.pool1; 200 test images"


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--layer", "features.conv9"], "no layer named 'features.conv9'"),
        (["--layer", "features.conv1", "--dataset", "cifar10"], "takes 1-channel images"),
        (["--layer", "features.conv1", "--top", "0"], "expected a number ≥ 1"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    code, out, err = cli_run(capsys, "atlas", str(LENET), *argv, "--out", str(tmp_path))
    assert code == cli.EXIT_BAD_INPUT
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert reason in err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_checkpoint_is_one_line(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, _, err = cli_run(capsys, "atlas", str(tmp_path / "nope.safetensors"), "--layer", "x")
    assert code == cli.EXIT_BAD_INPUT
    assert "nope.safetensors" in err
    assert len(err.strip().splitlines()) == 1


def test_an_out_folder_that_cannot_be_made_is_one_line(
    capsys: pytest.CaptureFixture, tmp_path: Path, one_torch_thread: None
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, out, err = cli_run(
        capsys, "atlas", str(LENET), "--layer", "features.conv1", "--limit", "50",
        "--out", str(blocker / "sheets"),
    )  # fmt: skip
    assert code == cli.EXIT_BAD_INPUT
    assert out == ""
    assert err.strip().splitlines()[-1].startswith("python -m dashboard atlas: cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
