"""Process helpers for tests of long-running commands."""

from __future__ import annotations

import subprocess


def descendants(pid: int) -> list[int]:
    """The direct children of ``pid`` (to check that none outlives its parent)."""
    ps = ["ps", "-o", "pid=", "--ppid", str(pid)]
    out = subprocess.run(ps, capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def assert_all_gone(pids: list[int], settle_s: float = 0.5) -> None:
    """Every one of ``pids`` has exited (after a moment for the kernel to reap them)."""
    import os
    import time

    time.sleep(settle_s)
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"process {pid} outlived its parent")
