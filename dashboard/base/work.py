"""Long work that a Stop button ends and a thread budget bounds: training, the atlas, feature
visualization and the attribution checks all ask the same two things."""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def stop_requested(should_stop: Callable[[], bool] | threading.Event | None) -> bool:
    """Whether the caller's Stop (a callable or an Event; None: never) has been pressed."""
    if should_stop is None:
        return False
    if isinstance(should_stop, threading.Event):
        return should_stop.is_set()
    return bool(should_stop())


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads for the block (None: leave the caller's), restored after."""
    if threads is None:
        yield
        return
    import torch  # the base layer stays importable without torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# torch's default generator is one per process: a seed set in one thread and the draws made in
# another interleave. Every seeded block takes this lock, so a run's initial weights stay the
# seed's own while another run starts training or a page draws its seeded noise.
_GLOBAL_RNG_LOCK = threading.RLock()


@contextmanager
def seeded(seed: int, *, keep_global: bool = True) -> Iterator[None]:
    """torch's global generator seeded with `seed` for the block, no other seeded block in
    between; with `keep_global` the generator's state before the block comes back after it."""
    import torch

    with _GLOBAL_RNG_LOCK:
        if not keep_global:
            torch.manual_seed(seed)
            yield
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield


def name_os_thread(name: str) -> None:
    """Give the calling thread `name` (15 bytes at most) in the operating system too, so tools
    and tests that read /proc/PID/task/*/comm can tell it apart (Linux only; else nothing)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_name = 15
        libc.prctl(pr_set_name, name.encode()[:15], 0, 0, 0)
