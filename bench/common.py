"""What every section of the benchmark shares: the records of a result, the machine it ran on,
the data and models, and the context a section runs in.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dashboard import data, models

REPO = Path(__file__).resolve().parent.parent


SEED = 0


BATCH = 64


LR = 1e-3  # the same Adam for both loops in (a)


MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


SMALL_MODELS = ("course-net", "lenet5", "bn-cnn", "simple-convnet")


@dataclass
class Row:
    """One line of the summary table."""

    what: str
    measured: str
    budget: str = ""
    status: str = "info"  # pass | FAIL | info | skipped | not built yet | error
    note: str = ""


@dataclass
class Section:
    key: str
    title: str
    started: str = ""
    load_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0
    threads: int = 0
    quick: bool = False
    rows: list[dict] = field(default_factory=list)
    text: str = ""  # markdown details
    raw: dict = field(default_factory=dict)


class Report:
    """What one section collects: summary rows, markdown details, raw numbers."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.lines: list[str] = []
        self.raw: dict[str, Any] = {}

    def row(self, *args: Any, **kwargs: Any) -> None:
        self.rows.append(Row(*args, **kwargs))

    def say(self, *lines: str) -> None:
        self.lines.extend(lines)
        for line in lines:
            print("   ", line, flush=True)

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        self.say(
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows),
            "",
        )


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def load() -> tuple[float, float, float]:
    return tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[return-value]


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def physical_cores() -> int:
    info = _lscpu()
    try:
        return int(info["Core(s) per socket"]) * int(info.get("Socket(s)", "1"))
    except (KeyError, ValueError):
        return os.cpu_count() or 1


def machine(threads: int, why: str) -> dict[str, Any]:
    info = _lscpu()
    cpu = info.get("Model name") or platform.processor() or "unknown"
    if "CPU family" in info:
        cpu += f" (family {info['CPU family']}, model {info.get('Model', '?')})"
    import numpy
    import sklearn
    import streamlit
    import torchvision

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "?"

    changed = len([line for line in git("status", "--porcelain").splitlines() if line.strip()])
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "threads_per_core": info.get("Thread(s) per core", "?"),
        "hypervisor": info.get("Hypervisor vendor", ""),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "streamlit": streamlit.__version__,
        "numpy": numpy.__version__,
        "sklearn": sklearn.__version__,
        "torch_threads": threads,
        "threads_why": why,
        "interop_threads": torch.get_num_interop_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp spins, then sleeps)"),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "commit": f"{git('rev-parse', '--short', 'HEAD')} (+{changed} uncommitted paths)",
    }


def choose_threads(requested: int | None) -> tuple[int, str]:
    cores = physical_cores()
    if requested:
        return requested, "as asked (--threads)"
    busy = os.getloadavg()[0]
    if busy >= cores:
        return 1, (
            f"load average {busy:.1f} ≥ {cores} cores at the start: with other processes on "
            "the cores, a second OpenMP thread mostly spin-waits at every op's barrier (section "
            "s measures it), so both loops run with 1 thread; --threads N to override"
        )
    return cores, f"one per physical core ({cores}), the machine being quiet at the start"


@dataclass
class Data:
    root: Path
    _cache: dict[str, data.Split] = field(default_factory=dict)

    def split(self, name: str) -> data.Split:
        if name not in self._cache:
            self._cache[name] = data.load_split("mnist", name, data_root=self.root, download=False)
        return self._cache[name]


def first(split: data.Split, n: int) -> data.Split:
    return dataclasses.replace(split, images=split.images[:n], labels=split.labels[:n])


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(SEED)
    return models.build_model(name, in_channels=1, num_classes=10, input_size=28)


@dataclass
class Context:
    data: Data
    quick: bool
    threads: int


def chromium_ready(rep: Report, what: str, budget: str) -> bool:
    """Whether Playwright and the system's Chromium are there; if not, the row says skipped."""
    try:
        import playwright  # noqa: F401

        from tests.browser import CHROMIUM
    except ImportError as err:
        rep.row(what, "–", budget, "skipped", str(err))
        return False
    if not Path(CHROMIUM).exists():
        rep.row(what, "–", budget, "skipped", f"no Chromium at {CHROMIUM}")
        return False
    return True
