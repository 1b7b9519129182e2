"""``sonic-gateway apply FILE... [--prune]``: declarative, idempotent registration over the admin API.

A file lists facilities with their backends (see ``facilities/local-demo.yaml``). Each facility and
backend is created when missing, updated when it differs, and left alone otherwise; the report says
which. With ``--prune`` the files are the whole truth: backends of the listed facilities that the files
do not list are deleted, and so are facilities that no file lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.catalog.schemas import BackendIn, FacilityIn

BACKEND_FIELDS = ("http_address", "metrics_address", "capacity", "accelerator", "enabled", "draining")
FACILITY_FIELDS = ("site", "description", "contact", "enabled")


class ApplyError(Exception):
    pass


class BackendSpec(BackendIn):
    facility: str = ""  # given by the enclosing facility


class FacilitySpec(FacilityIn):
    backends: list[BackendSpec] = Field(default_factory=list)


class FacilityFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    facilities: list[FacilitySpec] = Field(default_factory=list)


def load_files(paths: Sequence[str | Path]) -> list[FacilitySpec]:
    specs: list[FacilitySpec] = []
    for path in paths:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            specs.extend(FacilityFile.model_validate(data).facilities)
        except OSError as exc:
            raise ApplyError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ApplyError(f"{path}: not valid YAML: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
            )
            raise ApplyError(f"{path}: {problems}") from None
    names = [f.name for f in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ApplyError(f"facilities listed more than once: {duplicates}")
    return specs


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, outcome: str) -> None:
        self.lines.append(f"{what}: {outcome}")
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def summary(self) -> str:
        order = ("created", "updated", "unchanged", "deleted")
        return ", ".join(f"{self.counts.get(k, 0)} {k}" for k in order)


async def _check(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json() if response.content else None
    try:
        body = response.json()
        message = body.get("error") or body.get("detail")
    except ValueError:
        message = response.text[:200]
    raise ApplyError(
        f"{response.request.method} {response.request.url.path}: {response.status_code} {message}"
    )


async def _all(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = await _check(await client.get(path, params={**params, "limit": 1000, "offset": len(items)}))
        items.extend(page["items"])
        if len(items) >= page["total"] or not page["items"]:
            return items


def _changes(current: dict[str, Any], wanted: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {k: wanted[k] for k in fields if current.get(k) != wanted[k]}


async def apply_specs(
    client: httpx.AsyncClient, specs: Sequence[FacilitySpec], prune: bool = False
) -> Report:
    """Make the catalog behind ``client`` (base URL: the gateway) match ``specs``."""
    report = Report()
    existing = {f["name"]: f for f in await _all(client, "/api/v1/facilities")}
    for spec in specs:
        wanted = spec.model_dump(exclude={"backends"})
        current = existing.get(spec.name)
        if current is None:
            await _check(await client.post("/api/v1/facilities", json=wanted))
            report.add(f"facility {spec.name}", "created")
        elif changes := _changes(current, wanted, FACILITY_FIELDS):
            await _check(await client.patch(f"/api/v1/facilities/{current['id']}", json=changes))
            report.add(f"facility {spec.name}", "updated")
        else:
            report.add(f"facility {spec.name}", "unchanged")

        backends = {
            (b["protocol"], b["address"]): b
            for b in await _all(client, "/api/v1/backends", facility=spec.name)
        }
        listed = set()
        for backend in spec.backends:
            key = (backend.protocol, backend.address)
            listed.add(key)
            what = f"backend {spec.name} {backend.protocol}://{backend.address}"
            body = {**backend.model_dump(), "facility": spec.name}
            have = backends.get(key)
            if have is None:
                await _check(await client.post("/api/v1/backends", json=body))
                report.add(what, "created")
            elif changes := _changes(have, body, BACKEND_FIELDS):
                await _check(await client.patch(f"/api/v1/backends/{have['id']}", json=changes))
                report.add(what, "updated")
            else:
                report.add(what, "unchanged")
        if prune:
            for key, have in backends.items():
                if key not in listed:
                    await _check(await client.delete(f"/api/v1/backends/{have['id']}"))
                    report.add(f"backend {spec.name} {key[0]}://{key[1]}", "deleted")
    if prune:
        named = {s.name for s in specs}
        for name, facility in existing.items():
            if name not in named:
                await _check(await client.delete(f"/api/v1/facilities/{facility['id']}"))
                report.add(f"facility {name}", "deleted")
    return report


async def apply_files(
    paths: Sequence[str | Path],
    url: str,
    token: str | None,
    prune: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Report:
    specs = load_files(paths)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, transport=transport) as client:
        try:
            return await apply_specs(client, specs, prune)
        except httpx.HTTPError as exc:
            raise ApplyError(f"cannot talk to the gateway at {url}: {exc}") from None
