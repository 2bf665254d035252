"""What the server remembers between sessions, and which folders the app may read.

One small JSON file, `settings.json`, in `$CNN_LENS_CONFIG` (else the platform's user config
folder, `~/.config/cnn-lens` on Linux):

    {"data_root": "/home/me/datasets", "allowed_roots": ["/srv/class-images"]}

`data_root` is the data root a user chose on the Model page: every later session, reload and link
uses it (after `--data-root` and `$CNN_LENS_DATA`, see `paths.data_root`). The app rewrites it
atomically (a temporary file, then `os.replace`) and keeps every other key as it was.
`allowed_roots` is for the person running the server: the app never writes it.

The app reads image folders and data roots only under the allowed roots: the data roots, the
app's own cache, and what the server's owner adds with `streamlit run app.py -- --allow-root DIR`
or in `allowed_roots`. A browser can only choose among them. The command line is the owner's own
tool and is not restricted.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from dashboard.base import files
from dashboard.base.errors import LensError

CONFIG_ENV = "CNN_LENS_CONFIG"
FILE_NAME = "settings.json"
MAX_BYTES = 64 * 1024  # a settings file is a few lines; anything larger is not one
MAX_ROOTS = 64
ALLOW_ROOT_OPTION, DATA_ROOT_OPTION = "--allow-root", "--data-root"


class OutsideAllowedRootsError(LensError):
    """A folder the app was asked to read that lies outside every allowed root."""


@dataclass(frozen=True)
class Settings:
    data_root: str | None = None  # chosen in the app
    allowed_roots: tuple[str, ...] = ()  # added by the server's owner
    problem: str = ""  # why the file could not be read ("" when it was read or is absent)


@dataclass(frozen=True)
class ServerOptions:
    """The options after `--` in `streamlit run app.py -- --data-root DIR --allow-root DIR`."""

    data_root: str | None = None
    allow_roots: tuple[str, ...] = ()


def config_dir() -> Path:
    from_env = os.environ.get(CONFIG_ENV)
    return (
        Path(from_env).expanduser() if from_env else Path(platformdirs.user_config_dir("cnn-lens"))
    )


def settings_path() -> Path:
    return config_dir() / FILE_NAME


def _read_raw() -> tuple[dict, str]:
    """(the file's object, why it could not be read): ({}, "") when there is no file."""
    path = settings_path()
    try:
        with path.open("rb") as f:
            text = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return {}, ""
    except OSError as err:
        return {}, f"cannot read {path}: {err.strerror or err}"
    if len(text) > MAX_BYTES:
        return {}, f"{path} is larger than {MAX_BYTES // 1024} KiB: not a settings file"
    try:
        raw = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        return {}, f"{path} is not valid JSON ({err}): its settings are ignored"
    if not isinstance(raw, dict):
        return {}, f"{path} does not hold a JSON object: its settings are ignored"
    return raw, ""


def load() -> Settings:
    """The settings file's contents; a missing, unreadable or malformed file gives defaults
    (and says why in `problem`) so that no page and no command fails because of it."""
    raw, problem = _read_raw()
    root = raw.get("data_root")
    roots = raw.get("allowed_roots", [])
    if root is not None and (not isinstance(root, str) or not root.strip()):
        problem, root = f'"data_root" in {settings_path()} is not a folder name: ignored', None
    if not isinstance(roots, list) or not all(isinstance(r, str) and r.strip() for r in roots):
        problem, roots = f'"allowed_roots" in {settings_path()} is not a list of folders', []
    return Settings(root, tuple(roots[:MAX_ROOTS]), problem)


def save_data_root(root: str | os.PathLike[str] | None) -> Path:
    """Remember `root` as the data root chosen in the app (None forgets it); every other key of
    the file is kept. Written atomically: readers see the old file or the new one, never half."""
    raw, problem = _read_raw()
    if problem and settings_path().exists():
        raise LensError(f"{problem}; fix or remove it to remember a data root")
    if root is None:
        raw.pop("data_root", None)
    else:
        raw["data_root"] = str(root)
    path = settings_path()
    try:
        files.write_atomically(path, (json.dumps(raw, indent=2) + "\n").encode())
    except OSError as err:
        raise LensError(f"could not save the data root in {path}: {err.strerror or err}") from None
    return path


def server_options(argv: Sequence[str]) -> ServerOptions:
    """Read `--data-root DIR` and `--allow-root DIR` (repeatable) from the script's arguments,
    ignoring anything else (under a test runner these are the runner's own arguments)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(DATA_ROOT_OPTION, dest="data_root")
    parser.add_argument(ALLOW_ROOT_OPTION, dest="allow_roots", action="append", default=[])
    try:
        known, _ = parser.parse_known_args(list(argv))
    except SystemExit:  # an option without its folder: argparse would end the server
        return ServerOptions()
    return ServerOptions(known.data_root or None, tuple(known.allow_roots))


def _resolved(folder: str | os.PathLike[str]) -> Path | None:
    try:
        return Path(folder).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a loop of links, a NUL byte
        return None


def allowed_roots(
    data_roots: Sequence[str | os.PathLike[str]],
    cache: str | os.PathLike[str],
    server: ServerOptions,
    saved: Settings,
) -> list[Path]:
    """Every folder under which the app may read: the data roots, the app's cache, the
    owner's `--allow-root` folders and the file's `allowed_roots` (links resolved, no repeats)."""
    found: dict[Path, None] = {}
    for folder in (*data_roots, cache, *server.allow_roots, *saved.allowed_roots):
        path = _resolved(folder)
        if path is not None:
            found[path] = None
    return list(found)


def outside_message(path: str | os.PathLike[str], roots: Sequence[Path]) -> str:
    where = ", ".join(str(r) for r in roots) or "none"
    return (
        f"{path} is outside the folders this server lets the app read ({where}); the person "
        f"running the server can allow more with `streamlit run app.py -- {ALLOW_ROOT_OPTION} "
        f'DIR` or in "allowed_roots" of {settings_path()}'
    )


def check_allowed(folder: str | os.PathLike[str], roots: Sequence[Path]) -> Path:
    """`folder` resolved (links followed), when it lies inside an allowed root; else
    OutsideAllowedRootsError saying how the server's owner allows more. Nothing is listed or
    read before the check."""
    path = _resolved(folder) if str(folder).strip() else None
    if path is None or not any(path.is_relative_to(root) for root in roots):
        raise OutsideAllowedRootsError(outside_message(folder, roots))
    return path


def readable_folder(path: Path) -> str:
    """Why the app cannot list `path` ("" when it can)."""
    try:
        if not path.is_dir():
            return f"{path} is a file, not a folder" if path.exists() else f"{path} does not exist"
        with os.scandir(path):
            return ""
    except OSError as err:
        return f"cannot read {path}: {err.strerror or err}"
