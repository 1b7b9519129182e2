"""``sonic-gateway apply FILE... [--prune]``: declarative, idempotent registration over the admin API.

A file lists ``datasets``, ``models`` with their versions, and ``facilities`` with their backends, each
backend with the model versions it serves (its ``deployments``); see ``facilities/local-demo.yaml``.
Each entry is created when missing, updated when it differs, and left alone otherwise; the report says
which (and, for updates, which fields). References (a deployment's model version, a version's training
dataset) are checked against the files and the catalog before anything is changed, and every error
names the file and the entry.

With ``--prune`` the files are the whole truth: registered deployments of the listed backends that the
files do not list, backends of the listed facilities, facilities, model versions, models and datasets
that no file names (or references) are deleted. Provenance wins over pruning: a model version (or
model, or dataset) that usage records name is kept and reported ``kept``. The API would delete it (usage
rows hold names, not keys), but then the record of which job a version served would point at nothing:
no checksum, no signature, no training dataset. Deployments the gateway ``observed`` are its own
bookkeeping and are never pruned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from gateway.catalog.schemas import (
    BackendIn,
    DatasetIn,
    FacilityIn,
    ModelIn,
    ModelName,
    ModelVersionIn,
    Version,
)

BACKEND_FIELDS = ("http_address", "metrics_address", "capacity", "accelerator", "enabled", "draining")
FACILITY_FIELDS = ("site", "description", "contact", "enabled")
DATASET_FIELDS = (
    "experiment",
    "data_tier",
    "format",
    "n_files",
    "n_events",
    "size_bytes",
    "checksum",
    "storage_uris",
    "metadata",
)
MODEL_FIELDS = ("description",)
VERSION_FIELDS = (
    "platform",
    "inputs",
    "outputs",
    "max_batch_size",
    "sha256",
    "allowed_groups",
    "training_dataset",
    "tags",
)


class ApplyError(Exception):
    pass


def _as_text(value: object) -> object:
    """YAML reads ``version: 1`` as a number; a version is text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


FileVersion = Annotated[Version, BeforeValidator(_as_text)]


# -- the file format ----------------------------------------------------------------------------------
class DeploymentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    version: FileVersion
    _where: str = PrivateAttr("")

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.version)


class BackendSpec(BackendIn):
    facility: str = ""  # given by the enclosing facility
    deployments: list[DeploymentSpec] = Field(
        default_factory=list, description="the model versions this backend serves"
    )


class FacilitySpec(FacilityIn):
    backends: list[BackendSpec] = Field(default_factory=list)
    _where: str = PrivateAttr("")

    @model_validator(mode="after")
    def _own_backends(self) -> FacilitySpec:
        """A backend belongs to the facility it is listed under; naming another one is a mistake."""
        for j, backend in enumerate(self.backends):
            if backend.facility not in ("", self.name):
                raise ValueError(
                    f"backends.{j} ({backend.address}) names facility {backend.facility!r} but is listed "
                    f"under facility {self.name!r}; move it there or drop its 'facility:'"
                )
            backend.facility = self.name
        return self


class VersionSpec(ModelVersionIn):
    version: FileVersion
    _where: str = PrivateAttr("")


class ModelSpec(ModelIn):
    versions: list[VersionSpec] = Field(default_factory=list)  # type: ignore[assignment]
    _where: str = PrivateAttr("")


class DatasetSpec(DatasetIn):
    _where: str = PrivateAttr("")


class FacilityFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    datasets: list[DatasetSpec] = Field(default_factory=list)
    models: list[ModelSpec] = Field(default_factory=list)
    facilities: list[FacilitySpec] = Field(default_factory=list)


@dataclass
class Declared:
    """Everything the files declare, each entry knowing where it came from (``_where``)."""

    datasets: list[DatasetSpec] = field(default_factory=list)
    models: list[ModelSpec] = field(default_factory=list)
    facilities: list[FacilitySpec] = field(default_factory=list)

    def deployments(self) -> Iterable[tuple[FacilitySpec, BackendSpec, DeploymentSpec]]:
        for facility in self.facilities:
            for backend in facility.backends:
                for deployment in backend.deployments:
                    yield facility, backend, deployment


def _locate(path: str | Path, data: FacilityFile) -> None:
    for i, d in enumerate(data.datasets):
        d._where = f"{path}: datasets.{i} ({d.name})"
    for i, model in enumerate(data.models):
        model._where = f"{path}: models.{i} ({model.name})"
        for j, v in enumerate(model.versions):
            v._where = f"{path}: models.{i}.versions.{j} ({model.name}:{v.version})"
    for i, facility in enumerate(data.facilities):
        facility._where = f"{path}: facilities.{i} ({facility.name})"
        for j, backend in enumerate(facility.backends):
            for k, dep in enumerate(backend.deployments):
                dep._where = (
                    f"{path}: facilities.{i}.backends.{j}.deployments.{k} ({dep.model}:{dep.version})"
                )


def _duplicates(what: str, entries: Iterable[tuple[Any, str]]) -> None:
    seen: dict[Any, str] = {}
    for key, where in entries:
        if key in seen:
            raise ApplyError(f"{where}: {what} {key} listed more than once (also at {seen[key]})")
        seen[key] = where


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (plain YAML keeps the last one, which
    hides a typo or a bad merge)."""


def _mapping_once(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # '<<: *anchor' brings defaults that the mapping's own keys may override
        key = loader.construct_object(key_node)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: construct_mapping says what is wrong with it
            continue
        if first is not None:  # also on the same line: '{name: a, name: b}'
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice (first on line {first + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_once)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line, with its place."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


# The field that names an entry of each list, for error messages.
_LABELS = {
    "datasets": ("dataset", "name"),
    "models": ("model", "name"),
    "versions": ("version", "version"),
    "facilities": ("facility", "name"),
    "backends": ("backend", "address"),
    "deployments": ("deployment", "model"),
}


def _entry(raw: Any, loc: Sequence[int | str]) -> str:
    """The entries ``loc`` passes through, by name: ``facility lab, backend h:1``."""
    labels: list[str] = []
    node, section = raw, None
    for part in loc:
        if isinstance(node, dict) and part in node:
            node, section = node[part], part
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            if isinstance(section, str) and section in _LABELS and isinstance(node, dict):
                word, field = _LABELS[section]
                if node.get(field) is not None:
                    labels.append(f"{word} {node[field]}")
        else:
            break
    return ", ".join(labels)


def _problems(raw: Any, exc: ValidationError) -> str:
    out = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        entry = _entry(raw, e["loc"])
        out.append(f"{where}{f' ({entry})' if entry else ''}: {' '.join(e['msg'].split())}")
    return "; ".join(out)


def load_files(paths: Sequence[str | Path]) -> Declared:
    """Read and check every file before anything is applied; an ApplyError names the file and entry."""
    declared = Declared()
    for path in paths:
        try:
            raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_StrictLoader) or {}  # noqa: S506 - a SafeLoader
            data = FacilityFile.model_validate(raw)
        except OSError as exc:
            raise ApplyError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ApplyError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
        except ValidationError as exc:
            raise ApplyError(f"{path}: {_problems(raw, exc)}") from None
        _locate(path, data)
        declared.datasets.extend(data.datasets)
        declared.models.extend(data.models)
        declared.facilities.extend(data.facilities)
    _duplicates("dataset", ((d.name, d._where) for d in declared.datasets))
    _duplicates("model", ((m.name, m._where) for m in declared.models))
    _duplicates("facility", ((f.name, f._where) for f in declared.facilities))
    for model in declared.models:
        _duplicates("version", ((v.version, v._where) for v in model.versions))
    for facility in declared.facilities:
        _duplicates("backend", ((f"{b.protocol}://{b.address}", facility._where) for b in facility.backends))
        for backend in facility.backends:
            _duplicates("deployment", ((f"{d.model}:{d.version}", d._where) for d in backend.deployments))
    return declared


# -- the report ---------------------------------------------------------------------------------------
@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, outcome: str, detail: str = "") -> None:
        self.lines.append(f"{what}: {outcome}" + (f" ({detail})" if detail else ""))
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def summary(self) -> str:
        order = ("created", "updated", "unchanged", "deleted")
        text = ", ".join(f"{self.counts.get(k, 0)} {k}" for k in order)
        if self.counts.get("kept"):
            text += f", {self.counts['kept']} kept"
        return text


# -- talking to the admin API -------------------------------------------------------------------------
async def _check(response: httpx.Response, where: str = "") -> Any:
    if response.is_success:
        return response.json() if response.content else None
    try:
        body = response.json()
        message = body.get("error") or body.get("detail")
    except ValueError:
        message = response.text[:200]
    prefix = f"{where}: " if where else ""
    raise ApplyError(
        f"{prefix}{response.request.method} {response.request.url.path}: {response.status_code} {message}"
    )


async def _all(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = await _check(await client.get(path, params={**params, "limit": 1000, "offset": len(items)}))
        items.extend(page["items"])
        if len(items) >= page["total"] or not page["items"]:
            return items


async def _usage_count(client: httpx.AsyncClient, **params: str) -> int:
    page = await _check(await client.get("/api/v1/usage", params={**params, "limit": 1}))
    return int(page["total"])


def _changes(current: dict[str, Any], wanted: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {k: wanted[k] for k in fields if current.get(k) != wanted[k]}


@dataclass
class Catalog:
    """What the catalog holds now, as far as the files touch it."""

    datasets: dict[str, dict[str, Any]]
    models: dict[str, dict[str, Any]]
    versions: dict[str, dict[str, dict[str, Any]]]  # model -> version -> ModelVersionOut

    def has_version(self, model: str, version: str) -> bool:
        return version in self.versions.get(model, {})


async def _read_catalog(client: httpx.AsyncClient, declared: Declared, prune: bool) -> Catalog:
    datasets = {d["name"]: d for d in await _all(client, "/api/v1/datasets")}
    models = {mo["name"]: mo for mo in await _all(client, "/api/v1/models")}
    wanted = {mo.name for mo in declared.models} | {d.model for _, _, d in declared.deployments()}
    versions: dict[str, dict[str, dict[str, Any]]] = {}
    for name, model in models.items():
        if name in wanted or prune:
            listed = await _all(client, f"/api/v1/models/{model['id']}/versions")
            versions[name] = {v["version"]: v for v in listed}
    return Catalog(datasets, models, versions)


def _check_references(declared: Declared, catalog: Catalog) -> None:
    """Every reference resolves, in the files or the catalog: checked before anything changes."""
    datasets = {d.name for d in declared.datasets} | set(catalog.datasets)
    for model in declared.models:
        for v in model.versions:
            if v.training_dataset is not None and v.training_dataset not in datasets:
                raise ApplyError(
                    f"{v._where}: training_dataset {v.training_dataset!r} is neither in the files nor in "
                    "the catalog; declare it under 'datasets:' or fix the name"
                )
    versions = {(mo.name, v.version) for mo in declared.models for v in mo.versions}
    for _, _, dep in declared.deployments():
        if dep.key not in versions and not catalog.has_version(*dep.key):
            raise ApplyError(
                f"{dep._where}: no version {dep.version!r} of model {dep.model!r} in the files or the "
                "catalog; declare it under 'models:' or fix the reference"
            )


# -- applying -----------------------------------------------------------------------------------------
async def _apply_datasets(
    client: httpx.AsyncClient, declared: Declared, catalog: Catalog, report: Report
) -> None:
    for spec in declared.datasets:
        wanted = spec.model_dump(mode="json")
        current = catalog.datasets.get(spec.name)
        what = f"dataset {spec.name}"
        if current is None:
            await _check(await client.post("/api/v1/datasets", json=wanted), spec._where)
            report.add(what, "created")
        elif changes := _changes(current, wanted, DATASET_FIELDS):
            await _check(await client.patch(f"/api/v1/datasets/{current['id']}", json=changes), spec._where)
            report.add(what, "updated", ", ".join(changes))
        else:
            report.add(what, "unchanged")


async def _apply_models(
    client: httpx.AsyncClient, declared: Declared, catalog: Catalog, report: Report
) -> None:
    for spec in declared.models:
        current = catalog.models.get(spec.name)
        if current is None:
            body = spec.model_dump(mode="json")
            await _check(await client.post("/api/v1/models", json=body), spec._where)
            report.add(f"model {spec.name}", "created")
            for v in spec.versions:
                report.add(f"model version {spec.name}:{v.version}", "created")
            continue
        if changes := _changes(current, {"description": spec.description}, MODEL_FIELDS):
            await _check(await client.patch(f"/api/v1/models/{current['id']}", json=changes), spec._where)
            report.add(f"model {spec.name}", "updated", ", ".join(changes))
        else:
            report.add(f"model {spec.name}", "unchanged")
        have = catalog.versions.get(spec.name, {})
        for v in spec.versions:
            what = f"model version {spec.name}:{v.version}"
            wanted = v.model_dump(mode="json")
            existing = have.get(v.version)
            if existing is None:
                path = f"/api/v1/models/{current['id']}/versions"
                await _check(await client.post(path, json=wanted), v._where)
                report.add(what, "created")
            elif changes := _changes(existing, wanted, VERSION_FIELDS):
                path = f"/api/v1/model-versions/{existing['id']}"
                await _check(await client.patch(path, json=changes), v._where)
                report.add(what, "updated", ", ".join(changes))
            else:
                report.add(what, "unchanged")


async def _apply_deployments(
    client: httpx.AsyncClient,
    backend: dict[str, Any],
    spec: BackendSpec,
    label: str,
    prune: bool,
    report: Report,
) -> None:
    have = {
        (d["model"], d["version"]): d
        for d in await _all(client, "/api/v1/deployments", backend_id=backend["id"])
    }
    for dep in spec.deployments:
        what = f"deployment {dep.model}:{dep.version} on {label}"
        existing = have.get(dep.key)
        if existing is not None and existing["state"] == "registered":
            report.add(what, "unchanged")
            continue
        body = {"backend_id": backend["id"], "model": dep.model, "version": dep.version}
        await _check(await client.post("/api/v1/deployments", json=body), dep._where)
        if existing is None:
            report.add(what, "created")
        else:  # the gateway saw it there first; the API turns the observation into a registration
            report.add(what, "updated", "observed -> registered")
    if prune:
        listed = {d.key for d in spec.deployments}
        for key, existing in have.items():
            if key not in listed and existing["state"] == "registered":
                await _check(await client.delete(f"/api/v1/deployments/{existing['id']}"))
                report.add(f"deployment {key[0]}:{key[1]} on {label}", "deleted")


async def _apply_facilities(
    client: httpx.AsyncClient, declared: Declared, prune: bool, report: Report
) -> None:
    existing = {f["name"]: f for f in await _all(client, "/api/v1/facilities")}
    for spec in declared.facilities:
        wanted = spec.model_dump(exclude={"backends"})
        current = existing.get(spec.name)
        if current is None:
            await _check(await client.post("/api/v1/facilities", json=wanted), spec._where)
            report.add(f"facility {spec.name}", "created")
        elif changes := _changes(current, wanted, FACILITY_FIELDS):
            await _check(await client.patch(f"/api/v1/facilities/{current['id']}", json=changes), spec._where)
            report.add(f"facility {spec.name}", "updated", ", ".join(changes))
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
            label = f"{spec.name} {backend.protocol}://{backend.address}"
            body = {**backend.model_dump(exclude={"deployments"}), "facility": spec.name}
            have = backends.get(key)
            if have is None:
                have = await _check(await client.post("/api/v1/backends", json=body), spec._where)
                report.add(f"backend {label}", "created")
            elif changes := _changes(have, body, BACKEND_FIELDS):
                await _check(await client.patch(f"/api/v1/backends/{have['id']}", json=changes), spec._where)
                report.add(f"backend {label}", "updated", ", ".join(changes))
            else:
                report.add(f"backend {label}", "unchanged")
            await _apply_deployments(client, have, backend, label, prune, report)
        if prune:
            for key, have in backends.items():
                if key not in listed:
                    await _check(await client.delete(f"/api/v1/backends/{have['id']}"))
                    report.add(f"backend {spec.name} {key[0]}://{key[1]}", "deleted")
    if prune:
        named = {s.name for s in declared.facilities}
        for name, facility in existing.items():
            if name not in named:
                await _check(await client.delete(f"/api/v1/facilities/{facility['id']}"))
                report.add(f"facility {name}", "deleted")


def _kept(records: int, what: str, path: str) -> str:
    return f"{records} provenance record(s) name it; DELETE {path} removes {what} anyway"


async def _prune_models(
    client: httpx.AsyncClient, declared: Declared, catalog: Catalog, report: Report
) -> dict[str, str]:
    """Delete the versions and models no file names, except what usage names; returns the datasets that
    versions left in the catalog still reference, and which (pruning them would blank the reference)."""
    named = {mo.name: {v.version for v in mo.versions} for mo in declared.models}
    referenced = {d.key for _, _, d in declared.deployments()}
    named_models = set(named) | {model for model, _ in referenced}
    still_referenced = {
        v.training_dataset: f"{mo.name}:{v.version}"
        for mo in declared.models
        for v in mo.versions
        if v.training_dataset
    }
    for name, model in catalog.models.items():
        versions = catalog.versions.get(name, {})
        whole = name not in named_models
        unused: list[tuple[str, dict[str, Any]]] = []
        kept = 0
        for version, v in versions.items():
            if not whole and (version in named.get(name, set()) or (name, version) in referenced):
                continue
            path = f"/api/v1/model-versions/{v['id']}"
            records = await _usage_count(client, model=name, version=version)
            if records:
                report.add(f"model version {name}:{version}", "kept", _kept(records, "it", path))
                if v["training_dataset"]:
                    still_referenced.setdefault(v["training_dataset"], f"{name}:{version}")
                kept += 1
            else:
                unused.append((version, v))
        if whole and not kept:
            # Usage of a version the catalog no longer lists still names the model: keep it then too.
            records = await _usage_count(client, model=name)
            if not records:
                await _check(await client.delete(f"/api/v1/models/{model['id']}"))
                detail = f"with versions {', '.join(versions)}" if versions else ""
                report.add(f"model {name}", "deleted", detail)
                continue
        for version, v in unused:
            await _check(await client.delete(f"/api/v1/model-versions/{v['id']}"))
            report.add(f"model version {name}:{version}", "deleted")
        if whole:
            why = f"{kept} of its versions" if kept else "usage of its earlier versions"
            report.add(f"model {name}", "kept", f"{why} kept for provenance")
    return still_referenced


async def _prune_datasets(
    client: httpx.AsyncClient,
    declared: Declared,
    catalog: Catalog,
    referenced: dict[str, str],
    report: Report,
) -> None:
    named = {d.name for d in declared.datasets}
    for name, dataset in catalog.datasets.items():
        if name in named:
            continue
        if name in referenced:
            report.add(f"dataset {name}", "kept", f"the training dataset of model version {referenced[name]}")
            continue
        path = f"/api/v1/datasets/{dataset['id']}"
        records = await _usage_count(client, dataset=name)
        if records:
            report.add(f"dataset {name}", "kept", _kept(records, "it", path))
            continue
        await _check(await client.delete(path))
        report.add(f"dataset {name}", "deleted")


async def apply_specs(client: httpx.AsyncClient, declared: Declared, prune: bool = False) -> Report:
    """Make the catalog behind ``client`` (base URL: the gateway) match ``declared``."""
    catalog = await _read_catalog(client, declared, prune)
    _check_references(declared, catalog)
    report = Report()
    # Order: what is referenced before what refers to it; deletions after, children first.
    await _apply_datasets(client, declared, catalog, report)
    await _apply_models(client, declared, catalog, report)
    await _apply_facilities(client, declared, prune, report)
    if prune:
        referenced = await _prune_models(client, declared, catalog, report)
        await _prune_datasets(client, declared, catalog, referenced, report)
    return report


async def apply_files(
    paths: Sequence[str | Path],
    url: str,
    token: str | None,
    prune: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Report:
    declared = load_files(paths)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, transport=transport) as client:
        try:
            return await apply_specs(client, declared, prune)
        except httpx.HTTPError as exc:
            raise ApplyError(f"cannot talk to the gateway at {url}: {exc}") from None
