"""Where things live: the repository's shipped files, the data root and the cache."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAINED_DIR = REPO_ROOT / "trained"
# The small real MNIST sample shipped so a fresh offline machine can train and evaluate.
SAMPLE_DIR = TRAINED_DIR / "data" / "mnist-sample"
# Its CIFAR-10 counterpart: 2,000 train + 1,000 test JPEGs as an image folder (its README.md
# says where they come from).
CIFAR10_SAMPLE_DIR = TRAINED_DIR / "data" / "cifar10-sample"
DATA_ROOT_ENV = "CNN_LENS_DATA"
RUNS_ENV = "CNN_LENS_RUNS"
# Models a user trains and saves in the app or with `train --out runs/NAME` (never in trained/);
# $CNN_LENS_RUNS moves them (tests keep their saves out of the repository).
RUNS_DIR = Path(os.environ.get(RUNS_ENV) or REPO_ROOT / "runs").expanduser()
CACHE_ENV = "CNN_LENS_CACHE"


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """`--data-root`, else $CNN_LENS_DATA, else a per-user cache directory."""
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get(DATA_ROOT_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path(platformdirs.user_cache_dir("cnn-lens")) / "data"


def cache_dir() -> Path:
    """Decoded image folders and other derived files ($CNN_LENS_CACHE overrides)."""
    from_env = os.environ.get(CACHE_ENV)
    base = (
        Path(from_env).expanduser() if from_env else Path(platformdirs.user_cache_dir("cnn-lens"))
    )
    return base / "derived"
