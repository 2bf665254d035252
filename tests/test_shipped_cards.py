"""Cards name their dataset and its source, never a folder of the machine that trained them:
every shipped card is scanned, and the card writer (the command line's and the Train page's
`runs.result_card`) is checked on real runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard.base import paths
from dashboard.models import checkpoints
from dashboard.training import runs
from tests.conftest import FULL_SETS, REPO_ROOT

# An absolute path: /home/…, /root, /tmp/…, C:\…, \\server\… at the start of a value or
# after a space, a bracket, a quote or '='.
ABSOLUTE = re.compile(r"""(?:^|[\s("'=])(?:/[\w.~-]|[A-Za-z]:[\\/]|\\\\)""")
MACHINE_FOLDERS = ("/home", "/root", "/tmp", "/Users", "/mnt", "/srv", "/opt", "/var", "C:\\")


def strings(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every text inside a JSON value, with where it is."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings(item, f"{where}[{i}]")


SHIPPED_CARDS = sorted(paths.TRAINED_DIR.glob("*.json"))


@pytest.mark.parametrize("card_path", SHIPPED_CARDS, ids=lambda p: p.name)
def test_no_shipped_card_names_a_folder_of_the_machine_that_trained_it(card_path: Path):
    card = json.loads(card_path.read_text(encoding="utf-8"))
    found = [
        f"{where}: {text}"
        for where, text in strings(card)
        if ABSOLUTE.search(text) or any(folder in text for folder in MACHINE_FOLDERS)
    ]
    assert found == []
    # … and still says where the data came from, in words a reader can check
    source = card["dataset_source"]
    assert re.fullmatch(
        r"train: .+, [\d,]+ train images \((MNIST/raw|cifar10-jpg/train) in the data root\); "
        r"test: .+, [\d,]+ test images \((MNIST/raw|cifar10-jpg/test) in the data root\)",
        source,
    ), source
    assert "--out runs/" in card["command"]  # reproducible: train refuses --out trained/


def test_the_cards_tool_finds_nothing_left_to_rewrite():
    result = subprocess.run(
        [sys.executable, "tools/portable_cards.py", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("text", "portable"),
    [
        ("MNIST full set, 60,000 train images ({root}/MNIST/raw)",
         "MNIST full set, 60,000 train images (MNIST/raw in the data root)"),
        ("CIFAR-10 (JPEG copy), 10,000 test images ({root}/cifar10-jpg/test), first 500 used",
         "CIFAR-10 (JPEG copy), 10,000 test images (cifar10-jpg/test in the data root), first 500 "
         "used"),
        ("bundled MNIST sample: first 1,000 train images (full set not found under "
         "/nowhere/data/MNIST/raw; download not attempted)",
         "bundled MNIST sample: first 1,000 train images (full set not found under …/MNIST/raw; "
         "download not attempted)"),
        ("image folder my pets, 80 train images ({home}/my pets/train), 2 unreadable files skipped",
         "image folder my pets, 80 train images (~/my pets/train), 2 unreadable files skipped"),
        ("sample ({repo}/trained/data/mnist-sample)", "sample (trained/data/mnist-sample)"),
        ("image folder pets (C:\\Users\\me\\pets\\train)", "image folder pets (…/pets/train)"),
        ("image folder pets (\\\\server\\share\\pets)", "image folder pets (…/pets)"),
        ("MNIST full set, 60,000 train images", "MNIST full set, 60,000 train images"),
    ],
)  # fmt: skip
def test_a_source_is_written_without_absolute_paths(text: str, portable: str, tmp_path: Path):
    root = tmp_path / "data"
    text = text.format(root=root, home=Path.home(), repo=paths.REPO_ROOT)
    assert runs.portable_source(text, root) == portable


def test_a_card_the_command_line_writes_names_no_folder(lenet5_mnist_checkpoint: Path):
    """Trained with `--data-root` an absolute path and `--out` a temporary folder."""
    card = checkpoints.read_card(lenet5_mnist_checkpoint)
    # the full set, or the shipped sample's 10,000 laid out as one (a fresh clone's tests)
    train_images = "60,000" if "MNIST" in FULL_SETS else "10,000"
    assert card.dataset_source == (
        f"train: MNIST full set, {train_images} train images (MNIST/raw in the data root), "
        "first 8,000 used; test: MNIST full set, 10,000 test images (MNIST/raw in the data "
        "root), first 1,000 used"
    )
    texts = {where: text for where, text in strings(card.to_dict()) if where != "command"}
    assert [t for t in texts.values() if ABSOLUTE.search(t)] == []
