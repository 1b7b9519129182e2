"""Publishing rendered resources as the watched xDS files Envoy reads (``path_config_source``).

Each file is written beside its target and renamed over it: Envoy watches each directory for moves,
so it only ever reads complete files. Unchanged resources are not rewritten (Envoy is not woken).
Order keeps references valid: endpoints, then clusters, then the routes that name them.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.envoy.render import (
    T_CLUSTER,
    T_ENDPOINTS,
    T_ROUTES,
    eds_path,
    render_clusters,
    render_endpoints,
    render_routes,
)
from gateway.envoy.view import DataPlaneView, StaticView


@dataclass
class PushStats:
    files_written: int = 0
    bytes_written: int = 0


def _discovery_response(type_url: str, resources: list[dict[str, Any]]) -> str:
    body = {"resources": [{"@type": type_url, **r} for r in resources]}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    # version_info: the content's own hash, so equal content is recognisably equal.
    return json.dumps({"version_info": str(abs(hash(text))), **body}, sort_keys=True, separators=(",", ":"))


class XdsFiles:
    def __init__(self, static: StaticView) -> None:
        self.static = static
        self.root = Path(static.xds_dir)
        self._written: dict[Path, str] = {}

    def _write(self, path: Path, text: str, stats: PushStats) -> None:
        if self._written.get(path) == text:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        self._written[path] = text
        stats.files_written += 1
        stats.bytes_written += len(text)

    def publish(self, view: DataPlaneView) -> PushStats:
        stats = PushStats()
        for cluster, assignment in render_endpoints(self.static, view).items():
            self._write(
                Path(eds_path(self.static, cluster)), _discovery_response(T_ENDPOINTS, [assignment]), stats
            )
        self._write(
            self.root / "cds" / "cds.json",
            _discovery_response(T_CLUSTER, render_clusters(self.static, view)),
            stats,
        )
        for name, config in render_routes(self.static, view).items():
            self._write(self.root / "rds" / f"{name}.json", _discovery_response(T_ROUTES, [config]), stats)
        return stats
