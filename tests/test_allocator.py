"""The gateway's allocator tuning: a large buffer freed and allocated again reuses memory instead of
faulting it back in from the kernel (each case in a fresh interpreter: mallopt is process-wide)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
from gateway.allocator import keep_freed_memory
tuned = keep_freed_memory(int(sys.argv[1]))
size = 16 * 1024 * 1024  # about one 1693-patch request


def proxy_one():
    request = b"x" * size  # the received message (touching every page, as a real one does)
    answer = b"y" * size  # the backend's answer, alive at the same time
    del request, answer


proxy_one()  # warm: the first request always faults its memory in
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    proxy_one()
print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 20)
"""


def _faults_per_buffer(keep_mb: int) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(keep_mb)], check=True, capture_output=True, text=True, timeout=60
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning exists only in glibc")
def test_kept_memory_stops_page_faults_for_large_messages() -> None:
    tuned, faults = _faults_per_buffer(1024)
    untuned, default_faults = _faults_per_buffer(0)
    assert (tuned, untuned) == (True, False)
    pages = 2 * 16 * 1024 * 1024 // 4096
    assert default_faults > pages // 2  # glibc's defaults: both buffers faulted in on every request
    assert faults < pages // 20


def test_settings_bound_the_kept_memory() -> None:
    from gateway.config import ConfigError, load_settings

    assert load_settings(None).keep_freed_memory_mb == 1024
    with pytest.raises(ConfigError, match="keep_freed_memory_mb"):
        load_settings(None, keep_freed_memory_mb=4096)
