"""Where things live: the repository's shipped files, the data root and the cache."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from dashboard.base import settings

REPO_ROOT = Path(__file__).resolve().parents[2]
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


# Where each of the data root's layouts is read (named by every "not found" message).
DATA_LAYOUTS = (
    "MNIST/raw/ (the IDX files), FashionMNIST/raw/, cifar-10-batches-py/ and "
    "cifar-100-python/ (the official CIFAR batches) or cifar10-jpg/{train,test}/<class>/"
)
SHORT_DATA_ROOT_HINT = (
    f"set the data root in the Model page's Data root field, with --data-root or ${DATA_ROOT_ENV}"
)
DATA_ROOT_HINT = f"{SHORT_DATA_ROOT_HINT}; it is read as {DATA_LAYOUTS}"


def default_data_root() -> Path:
    return Path(platformdirs.user_cache_dir("cnn-lens")) / "data"


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """`--data-root`, else $CNN_LENS_DATA, else the data root set in the app (the settings
    file), else a per-user cache directory."""
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get(DATA_ROOT_ENV)
    if from_env:
        return Path(from_env).expanduser()
    saved = settings.load().data_root
    if saved:
        return Path(saved).expanduser()
    return default_data_root()


def cache_root() -> Path:
    """The app's own cache folder ($CNN_LENS_CACHE overrides)."""
    from_env = os.environ.get(CACHE_ENV)
    return (
        Path(from_env).expanduser() if from_env else Path(platformdirs.user_cache_dir("cnn-lens"))
    )


def cache_dir() -> Path:
    """Decoded image folders and other derived files."""
    return cache_root() / "derived"
