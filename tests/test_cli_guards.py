"""The command line's guards before work starts: `train --out` that cannot be written (a real
read-only file system) or that points into trained/; seeds and thread counts out of range; and
Ctrl-C in the first moments of `python -m dashboard`. Each ends in one line and a non-zero exit,
never a traceback, and nothing is trained or written."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dashboard import cli
from dashboard.base import paths
from tests.conftest import REPO_ROOT
from tests.test_cli_train import ENV, run_cli
from tests.test_hostile_checkpoints import tiny_disk, tree_digest

QUICK = ["--model", "course-net", "--dataset", "mnist", "--epochs", "1", "--limit-train", "256"]
PROG = "python -m dashboard train"


def refused(result: subprocess.CompletedProcess) -> str:
    """Exit 2, nothing on stdout, one line on stderr (and no training ran): → that line."""
    assert result.returncode == cli.EXIT_BAD_INPUT, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_an_out_folder_on_a_read_only_file_system_is_refused_before_training(tmp_path: Path):
    with tiny_disk(tmp_path / "disk", 256) as disk:
        (disk / "runs").mkdir()
        remounted = subprocess.run(
            ["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True
        )
        if remounted.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {remounted.stderr.strip()}")
        result = run_cli("train", *QUICK, "--out", str(disk / "runs" / "x"))
        line = refused(result)
        assert line == (
            f"{PROG}: cannot write in {disk / 'runs'} (Read-only file system): choose another --out"
        )
        assert list((disk / "runs").iterdir()) == []


@pytest.mark.parametrize(
    "out",
    [
        "trained/lenet5-mnist",
        "trained/new-name",
        "runs/../trained/lenet5-mnist",
        "{tmp}/link-to-trained/lenet5-mnist",  # a symbolic link to the folder
        "{tmp}/lenet5-mnist",  # a symbolic link to the weights file itself
    ],
)
def test_out_inside_trained_is_refused_even_with_overwrite(out: str, tmp_path: Path):
    (tmp_path / "link-to-trained").symlink_to(paths.TRAINED_DIR)
    (tmp_path / "lenet5-mnist.safetensors").symlink_to(
        paths.TRAINED_DIR / "lenet5-mnist.safetensors"
    )
    before = tree_digest(paths.TRAINED_DIR)
    out = out.format(tmp=tmp_path)
    line = refused(run_cli("train", *QUICK, "--out", out, "--overwrite"))
    assert line == (
        f"{PROG}: {out}: trained/ holds the shipped checkpoints, which are never replaced; runs "
        "are saved in runs/ (or give another --out)"
    )
    assert tree_digest(paths.TRAINED_DIR) == before


@pytest.mark.parametrize(
    ("argument", "value", "reason"),
    [
        ("--seed", "99999999999999999999999",
         "expected a seed from 0 to 4,294,967,295, got 99,999,999,999,999,999,999,999"),
        ("--seed", "-1", "expected a seed from 0 to 4,294,967,295, got -1"),
        ("--seed", "1e3", "expected a whole number, got '1e3'"),
        ("--threads", "100000", "expected at most {most} threads (4 per core on this machine's "
         "{cores}), got 100,000"),
        ("--threads", "0", "expected a number ≥ 1, got 0"),
    ],
)  # fmt: skip
def test_seeds_and_thread_counts_out_of_range_are_one_line(argument, value, reason):
    cores = os.cpu_count() or 1
    reason = reason.format(most=4 * cores, cores=cores)
    line = refused(run_cli("train", *QUICK, argument, value))
    assert line == f"{PROG}: error: argument {argument}: {reason}"


def test_the_largest_seed_and_thread_count_allowed_train(tmp_path: Path, shared_datasets: Path):
    out = tmp_path / "edge"
    result = run_cli(
        "train", *QUICK, "--limit-test", "100", "--seed", str(cli.MAX_SEED),
        "--threads", str(cli.max_threads()), "--data-root", str(shared_datasets), "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert out.with_suffix(".safetensors").is_file()


# The traceback of a Ctrl-C while runpy looks for the package: no line of CNN Lens ran yet.
PYTHONS_OWN = re.compile(
    r'Traceback \(most recent call last\):\n(  File "<frozen runpy>".*\n(    .*\n)*)+'
    r"KeyboardInterrupt\n"
)


@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0, 1.5, 2.5, 4.0, 8.0])
@pytest.mark.parametrize(
    "command",
    [["summary", "lenet5"], ["evaluate", "trained/lenet5-mnist.safetensors", "--limit", "2000"]],
)
def test_ctrl_c_while_starting_is_one_line_and_exit_130(command: list[str], delay: float):
    """SIGINT at several moments of the first seconds (the package imported, torch importing,
    the command running): its last line says it was interrupted, exit 130, no traceback; or the
    command had already finished. (Before the interpreter has run a line of CNN Lens, in its
    first ~50 ms, a Ctrl-C is Python's own to handle.)"""
    child = subprocess.Popen(
        [sys.executable, "-m", "dashboard", *command],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    time.sleep(delay)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=300)
    if child.returncode == 0:  # it finished before the signal came
        return
    if child.returncode == -signal.SIGINT and PYTHONS_OWN.fullmatch(err):
        return  # still inside runpy, before the package's first line: Python's own to handle
    assert "Traceback" not in err
    assert child.returncode == 130, err
    lines = err.splitlines()
    assert lines[-1] in (
        "python -m dashboard: interrupted",  # while starting: nothing else was printed
        f"python -m dashboard {command[0]}: interrupted",
    ), err
    if lines[-1] == "python -m dashboard: interrupted":
        assert len(lines) == 1, err


def test_the_train_page_never_saves_in_trained_nor_below_it(tmp_path: Path):
    """The page's runs folder ($CNN_LENS_RUNS) pointed at trained/, a folder in it, or a link
    to it: saving is refused by name, before anything is written."""
    from dashboard.base.errors import LensError
    from dashboard.training import runs

    (tmp_path / "link").symlink_to(paths.TRAINED_DIR)
    for folder in (paths.TRAINED_DIR, paths.TRAINED_DIR / "sub", tmp_path / "link"):
        with pytest.raises(LensError, match=r"^trained/ holds the shipped checkpoints: runs are"):
            runs.saved_path("x", folder)
    assert runs.saved_path("x", tmp_path) == tmp_path / "x.safetensors"
