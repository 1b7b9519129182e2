"""Process helpers for tests of long-running commands."""

from __future__ import annotations

import subprocess


def descendants(pid: int) -> list[int]:
    """The direct children of ``pid`` (to check that none outlives its parent)."""
    ps = ["ps", "-o", "pid=", "--ppid", str(pid)]
    out = subprocess.run(ps, capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]
