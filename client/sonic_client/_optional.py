"""Optional dependencies: imported only by the features that need them, with an error that names
the extra to install (the base install of a grid job stays small: numpy and tritonclient[grpc])."""

from __future__ import annotations

import importlib

from ._errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, extra: str, feature: str) -> None:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``sonic-client[extra]``.

    Call it before the feature's own ``import module`` statement, so that statement keeps its
    static types and a missing package gets an actionable message instead of a bare ImportError.
    """
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module, extra, feature) from exc
