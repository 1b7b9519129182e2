"""Waiting for what arrives asynchronously (a push, a health probe), bounded: never a timing goal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(check: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Wait (bounded) until ``check()`` holds: for things that arrive asynchronously, not for timing."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s")
        await asyncio.sleep(0.05)
