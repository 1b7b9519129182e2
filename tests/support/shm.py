"""A system shared-memory region that a local client registered on each facility's Triton."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np


@contextlib.asynccontextmanager
async def registered_region(
    owners: Sequence[Any], name: str, key: str, value: np.ndarray
) -> AsyncIterator[None]:
    """Create region ``name`` (at ``key``) holding ``value``, registered through every one of ``owners``
    (tritonclient aio clients, gRPC or HTTP, talking to Triton directly); on exit unregister it, close
    the owners and destroy the region."""
    import tritonclient.utils.shared_memory as shm

    region = shm.create_shared_memory_region(name, key, value.nbytes)
    shm.set_shared_memory_region(region, [value])
    try:
        for owner in owners:
            await owner.register_system_shared_memory(name, key, value.nbytes)
        yield
    finally:
        for owner in owners:
            await owner.unregister_system_shared_memory(name)
            await owner.close()
        shm.destroy_shared_memory_region(region)
