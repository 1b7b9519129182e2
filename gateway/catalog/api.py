"""The admin and catalog REST API under ``/api/v1``.

Every endpoint needs an authenticated caller; writes also need an admin (``authorize_admin``). Errors
are the gateway's own (``gateway.errors``), answered with THE status table as ``{"error": "..."}``: 401/403
for auth, 404 for unknown ids, 409 for duplicates (IntegrityError is translated here, at the edge), 422
for bad input, where the body also lists each wrong field (``{"error": ..., "detail": [{loc, msg,
type}]}``, the same shape for FastAPI's validation and for our own checks). Handlers are plain ``def``
so the database work runs in the worker threads, never on the event loop; after each write the router's
backends and model groups are refreshed from the catalog and the consistency check is woken.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response, Security
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import ColumnElement, Select, String, cast, exists, func, select
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import InstrumentedAttribute, Session
from starlette.exceptions import HTTPException  # what FastAPI raises for a body it cannot parse

from gateway.auth.www import www_authenticate
from gateway.catalog import models as m
from gateway.catalog import schemas as s
from gateway.catalog.db import brief, why_unreadable
from gateway.core.identity import Principal
from gateway.errors import (
    Conflict,
    GatewayError,
    InvalidArgument,
    InvalidField,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    status_of,
)
from gateway.routing.backend import Backend as RouterBackend

if TYPE_CHECKING:
    from gateway.app import Gateway

T = TypeVar("T")


# -- errors: gateway.errors through THE table, in one body shape ---------------------------------------
def _field_errors(errors: Any) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]


def _error_body(exc: GatewayError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": exc.message}
    if isinstance(exc, InvalidField):
        body["detail"] = [{"loc": list(exc.loc), "msg": exc.message, "type": "value_error"}]
    return body


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    headers = None
    if isinstance(exc, Unauthenticated | PermissionDenied):
        headers = {"WWW-Authenticate": www_authenticate(exc)}
    return JSONResponse(_error_body(exc), status_code=status_of(exc).http_status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 for ``/api``, in the API's one shape: ``error`` says it all in one line."""
    assert isinstance(exc, RequestValidationError)
    if not request.url.path.startswith(router.prefix):
        return await request_validation_exception_handler(request, exc)
    detail = _field_errors(exc.errors())
    error = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in detail)
    return JSONResponse({"error": error, "detail": detail}, status_code=422)


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers an operation documents (OpenAPI)."""
    what = {
        400: "malformed request",
        401: "no valid bearer token (see WWW-Authenticate)",
        403: "the token lacks the admin scope or group",
        404: "no entry with that id",
        409: "a name that must be unique is taken",
        422: "a field is wrong: each one is listed under detail",
    }
    return {
        code: {"model": s.ValidationErrorOut if code == 422 else s.ErrorOut, "description": what[code]}
        for code in codes
    }


class _Route(APIRoute):
    """FastAPI answers a body it cannot decode (not UTF-8) with its own 400 ``{"detail": ...}``; here
    it is the gateway's InvalidArgument, in the API's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                if exc.status_code != 400:
                    raise
                raise InvalidArgument(
                    f"the request body cannot be read: {exc.detail}; send UTF-8 JSON"
                ) from exc

        return guarded


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


# Documents the scheme in OpenAPI; the token itself goes to the gateway's authenticator unparsed.
_bearer = HTTPBearer(auto_error=False, description="an OIDC/WLCG/SciTokens access token")


async def get_principal(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
) -> Principal:
    gateway = _gateway(request)
    return await gateway.dataplane.authenticator.authenticate(request.headers.get("authorization"))


async def get_admin(request: Request, principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    _gateway(request).authorizer.authorize_admin(principal)
    return principal


def get_session(request: Request) -> Iterator[Session]:
    with _gateway(request).catalog.session() as session:
        try:
            yield session
        except DataError as exc:  # the schemas keep values in range; this is the database's last word
            raise InvalidField(f"the catalog database cannot store a value: {brief(exc)}") from exc
        except OperationalError as exc:  # down, unreachable or unmigrated: the caller may retry
            raise Unavailable(f"the catalog cannot be read or written now: {why_unreadable(exc)}") from exc


def _storable_query(request: Request) -> None:
    """Query text the database can compare: PostgreSQL refuses NUL characters."""
    for name, value in request.query_params.multi_items():
        if "\x00" in value or "\x00" in name:
            raise InvalidField(f"query parameter {name!r} may not contain NUL characters", ("query", name))


SessionDep = Annotated[Session, Depends(get_session)]
Reader = Annotated[Principal, Depends(get_principal)]
Admin = Annotated[Principal, Depends(get_admin)]
Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Offset = Annotated[int, Query(ge=0, le=s.INT32_MAX)]
Sort = Annotated[
    str | None, Query(pattern=r"^-?[a-z_]+$", description="a field; '-field' for descending; ties by id")
]
Ident = Annotated[int, Path(ge=1, le=s.INT32_MAX, description="the entry's id")]

router = APIRouter(
    prefix="/api/v1",
    tags=["catalog"],
    dependencies=[Depends(_storable_query)],
    responses=_responses(401, 422),
    route_class=_Route,
)
ONE = _responses(404)  # reads of one entry
CREATE = _responses(400, 403, 409)
CHANGE = _responses(400, 403, 404, 409)
DELETE = _responses(403, 404, 409)


# -- helpers ------------------------------------------------------------------------------------------
def _commit(session: Session, what: str) -> None:
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        if _is_unique_violation(exc):
            raise Conflict(f"{what} already exists (names must be unique)") from exc
        raise Conflict(f"{what}: the catalog refused the change: {brief(exc)}") from exc


def _is_unique_violation(exc: IntegrityError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None)  # psycopg
    return sqlstate == "23505" or "UNIQUE constraint failed" in str(exc.orig)  # or SQLite's words


def _refresh_router(request: Request) -> None:
    """After a commit: routing and model groups at once, the consistency check soon after."""
    _gateway(request).catalog.after_write()


def _get(session: Session, cls: type[T], ident: Ident, what: str) -> T:
    obj = session.get(cls, ident)
    if obj is None:
        raise NotFound(f"no {what} with id {ident}")
    return obj


def _delete(session: Session, cls: type[Any], ident: Ident, what: str, request: Request | None) -> Response:
    """DELETE one row (404 if absent); rows the router reads also refresh its snapshot."""
    session.delete(_get(session, cls, ident, what))
    _commit(session, what)
    if request is not None:
        _refresh_router(request)
    return Response(status_code=204)


def _like(pattern: str) -> str:
    """A glob (``*`` and ``?``) as a LIKE pattern, with LIKE's own wildcards escaped."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _page(
    session: Session,
    stmt: Select[Any],
    id_column: InstrumentedAttribute[int],
    sortable: dict[str, Any],
    sort: str | None,
    limit: int,
    offset: int,
    convert: Callable[[Any], T],
) -> s.Page[T]:
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    order: list[Any] = []
    if sort:
        field = sort.lstrip("-")
        if field not in sortable:
            raise InvalidField(
                f"cannot sort by {field!r}; choose one of {sorted(sortable)}", ("query", "sort")
            )
        column = sortable[field]
        order.append(column.desc() if sort.startswith("-") else column.asc())
    order.append(id_column.asc())
    rows = session.execute(stmt.order_by(*order).limit(limit).offset(offset)).all()
    items = [convert(row[0] if len(row) == 1 else row) for row in rows]
    return s.Page[T](items=items, total=total, limit=limit, offset=offset)


def _apply(obj: object, values: dict[str, Any]) -> None:
    for key, value in values.items():
        setattr(obj, key, value)


def _tagged(column: Any, tag: str) -> ColumnElement[bool]:
    """JSON list contains ``tag``: portable (SQLite and PostgreSQL) text match of the quoted element."""
    return cast(column, String).like(f"%{_like(_json_str(tag))}%", escape="\\")


def _json_str(value: str) -> str:
    import json

    return json.dumps(value)


# -- facilities ---------------------------------------------------------------------------------------
def _facility_out(f: m.Facility) -> s.FacilityOut:
    return s.FacilityOut(
        id=f.id,
        name=f.name,
        site=f.site,
        description=f.description,
        contact=f.contact,
        enabled=f.enabled,
        created_at=f.created_at,
    )


@router.get("/facilities", response_model=s.Page[s.FacilityOut])
def list_facilities(
    session: SessionDep,
    _: Reader,
    name: Annotated[str | None, Query(description="glob, e.g. 'lab-*'")] = None,
    enabled: bool | None = None,
    sort: Sort = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> s.Page[s.FacilityOut]:
    stmt = select(m.Facility)
    if name:
        stmt = stmt.where(m.Facility.name.ilike(_like(name), escape="\\"))
    if enabled is not None:
        stmt = stmt.where(m.Facility.enabled.is_(enabled))
    sortable = {"name": m.Facility.name, "site": m.Facility.site, "created_at": m.Facility.created_at}
    return _page(session, stmt, m.Facility.id, sortable, sort, limit, offset, _facility_out)


@router.post("/facilities", status_code=201, response_model=s.FacilityOut, responses=CREATE)
def create_facility(body: s.FacilityIn, session: SessionDep, _: Admin, request: Request) -> s.FacilityOut:
    facility = m.Facility(**body.model_dump())
    session.add(facility)
    _commit(session, f"facility {body.name!r}")
    _refresh_router(request)
    return _facility_out(facility)


@router.get("/facilities/{ident}", response_model=s.FacilityOut, responses=ONE)
def get_facility(ident: Ident, session: SessionDep, _: Reader) -> s.FacilityOut:
    return _facility_out(_get(session, m.Facility, ident, "facility"))


@router.patch("/facilities/{ident}", response_model=s.FacilityOut, responses=CHANGE)
def update_facility(
    ident: Ident, body: s.FacilityPatch, session: SessionDep, _: Admin, request: Request
) -> s.FacilityOut:
    facility = _get(session, m.Facility, ident, "facility")
    _apply(facility, body.model_dump(exclude_unset=True))
    _commit(session, f"facility {facility.name!r}")
    _refresh_router(request)
    return _facility_out(facility)


@router.delete("/facilities/{ident}", status_code=204, responses=DELETE)
def delete_facility(ident: Ident, session: SessionDep, _: Admin, request: Request) -> Response:
    return _delete(session, m.Facility, ident, "facility", request)


# -- backends -----------------------------------------------------------------------------------------
def _backend_out(row: Any) -> s.BackendOut:
    b, facility = row
    return s.BackendOut(
        id=b.id,
        facility=facility,
        facility_id=b.facility_id,
        router_id=RouterBackend.make_id(facility, b.address),
        protocol=b.protocol,
        address=b.address,
        http_address=b.http_address,
        metrics_address=b.metrics_address,
        capacity=b.capacity,
        accelerator=b.accelerator,
        enabled=b.enabled,
        draining=b.draining,
        last_health_at=b.last_health_at,
        observed_models=b.observed_models or {},
        created_at=b.created_at,
    )


def _backend_select() -> Any:  # a Select; its generic form differs between SQLAlchemy 2.0 and 2.1
    return select(m.Backend, m.Facility.name).join(m.Facility, m.Backend.facility_id == m.Facility.id)


def _one_backend(session: Session, ident: int) -> s.BackendOut:
    row = session.execute(_backend_select().where(m.Backend.id == ident)).first()
    if row is None:
        raise NotFound(f"no backend with id {ident}")
    return _backend_out(row)


@router.get("/backends", response_model=s.Page[s.BackendOut])
def list_backends(
    session: SessionDep,
    _: Reader,
    facility: str | None = None,
    enabled: bool | None = None,
    model: Annotated[str | None, Query(description="backends with a deployment of this model")] = None,
    sort: Sort = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> s.Page[s.BackendOut]:
    stmt = _backend_select()
    if facility:
        stmt = stmt.where(m.Facility.name == facility)
    if enabled is not None:
        stmt = stmt.where(m.Backend.enabled.is_(enabled))
    if model:
        stmt = stmt.where(
            exists()
            .where(m.Deployment.backend_id == m.Backend.id)
            .where(m.Deployment.model_version_id == m.ModelVersion.id)
            .where(m.ModelVersion.model_id == m.Model.id)
            .where(m.Model.name == model)
        )
    sortable = {"address": m.Backend.address, "capacity": m.Backend.capacity, "facility": m.Facility.name}
    return _page(session, stmt, m.Backend.id, sortable, sort, limit, offset, _backend_out)


def _facility_by_name(session: Session, name: str) -> m.Facility:
    facility = session.scalar(select(m.Facility).where(m.Facility.name == name))
    if facility is None:
        raise InvalidField(f"facility: no facility named {name!r}; register it first", ("body", "facility"))
    return facility


@router.post("/backends", status_code=201, response_model=s.BackendOut, responses=CREATE)
def create_backend(body: s.BackendIn, session: SessionDep, _: Admin, request: Request) -> s.BackendOut:
    facility = _facility_by_name(session, body.facility)
    backend = m.Backend(facility_id=facility.id, **body.model_dump(exclude={"facility"}))
    session.add(backend)
    _commit(session, f"backend {body.protocol}://{body.address} of facility {body.facility!r}")
    _refresh_router(request)
    return _one_backend(session, backend.id)


@router.get("/backends/{ident}", response_model=s.BackendOut, responses=ONE)
def get_backend(ident: Ident, session: SessionDep, _: Reader) -> s.BackendOut:
    return _one_backend(session, ident)


@router.patch("/backends/{ident}", response_model=s.BackendOut, responses=CHANGE)
def update_backend(
    ident: Ident, body: s.BackendPatch, session: SessionDep, _: Admin, request: Request
) -> s.BackendOut:
    backend = _get(session, m.Backend, ident, "backend")
    _apply(backend, body.model_dump(exclude_unset=True))
    _commit(session, "backend")
    _refresh_router(request)
    return _one_backend(session, ident)


@router.delete("/backends/{ident}", status_code=204, responses=DELETE)
def delete_backend(ident: Ident, session: SessionDep, _: Admin, request: Request) -> Response:
    return _delete(session, m.Backend, ident, "backend", request)


# -- datasets -----------------------------------------------------------------------------------------
def _dataset_out(d: m.Dataset) -> s.DatasetOut:
    return s.DatasetOut(
        id=d.id,
        name=d.name,
        experiment=d.experiment,
        data_tier=d.data_tier,
        format=d.format,
        n_files=d.n_files,
        n_events=d.n_events,
        size_bytes=d.size_bytes,
        checksum=d.checksum,
        storage_uris=d.storage_uris,
        metadata=d.meta,
        created_at=d.created_at,
    )


def _dataset_values(values: dict[str, Any]) -> dict[str, Any]:
    if "metadata" in values:
        values["meta"] = values.pop("metadata")
    return values


@router.get("/datasets", response_model=s.Page[s.DatasetOut])
def list_datasets(
    session: SessionDep,
    _: Reader,
    name: Annotated[str | None, Query(description="glob, e.g. 'protodune-sp:*'")] = None,
    experiment: str | None = None,
    tier: Annotated[str | None, Query(description="data tier")] = None,
    sort: Sort = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> s.Page[s.DatasetOut]:
    stmt = select(m.Dataset)
    if name:
        stmt = stmt.where(m.Dataset.name.ilike(_like(name), escape="\\"))
    if experiment:
        stmt = stmt.where(m.Dataset.experiment == experiment)
    if tier:
        stmt = stmt.where(m.Dataset.data_tier == tier)
    sortable = {
        "name": m.Dataset.name,
        "experiment": m.Dataset.experiment,
        "n_events": m.Dataset.n_events,
        "size_bytes": m.Dataset.size_bytes,
        "created_at": m.Dataset.created_at,
    }
    return _page(session, stmt, m.Dataset.id, sortable, sort, limit, offset, _dataset_out)


@router.post("/datasets", status_code=201, response_model=s.DatasetOut, responses=CREATE)
def create_dataset(body: s.DatasetIn, session: SessionDep, _: Admin) -> s.DatasetOut:
    dataset = m.Dataset(**_dataset_values(body.model_dump()))
    session.add(dataset)
    _commit(session, f"dataset {body.name!r}")
    return _dataset_out(dataset)


@router.get("/datasets/{ident}", response_model=s.DatasetOut, responses=ONE)
def get_dataset(ident: Ident, session: SessionDep, _: Reader) -> s.DatasetOut:
    return _dataset_out(_get(session, m.Dataset, ident, "dataset"))


@router.patch("/datasets/{ident}", response_model=s.DatasetOut, responses=CHANGE)
def update_dataset(ident: Ident, body: s.DatasetPatch, session: SessionDep, _: Admin) -> s.DatasetOut:
    dataset = _get(session, m.Dataset, ident, "dataset")
    _apply(dataset, _dataset_values(body.model_dump(exclude_unset=True)))
    _commit(session, "dataset")
    return _dataset_out(dataset)


@router.delete("/datasets/{ident}", status_code=204, responses=DELETE)
def delete_dataset(ident: Ident, session: SessionDep, _: Admin) -> Response:
    return _delete(session, m.Dataset, ident, "dataset", None)


# -- models and versions ------------------------------------------------------------------------------
def _model_out(model: m.Model) -> s.ModelOut:
    return s.ModelOut(
        id=model.id,
        name=model.name,
        description=model.description,
        versions=[v.version for v in model.versions],
        created_at=model.created_at,
    )


def _version_out(session: Session, v: m.ModelVersion) -> s.ModelVersionOut:
    dataset = session.get(m.Dataset, v.training_dataset_id) if v.training_dataset_id is not None else None
    return s.ModelVersionOut(
        id=v.id,
        model=v.model.name,
        model_id=v.model_id,
        version=v.version,
        platform=v.platform,
        inputs=v.inputs,
        outputs=v.outputs,
        max_batch_size=v.max_batch_size,
        sha256=v.sha256,
        allowed_groups=v.allowed_groups,
        training_dataset=dataset.name if dataset is not None else None,
        created_by=v.created_by,
        tags=v.tags,
        created_at=v.created_at,
    )


def _version_values(session: Session, values: dict[str, Any]) -> dict[str, Any]:
    if "training_dataset" in values:
        name = values.pop("training_dataset")
        values["training_dataset_id"] = None
        if name is not None:
            dataset = session.scalar(select(m.Dataset).where(m.Dataset.name == name))
            if dataset is None:
                raise InvalidField(
                    f"training_dataset: no dataset named {name!r}; register it first",
                    ("body", "training_dataset"),
                )
            values["training_dataset_id"] = dataset.id
    return values


def _new_version(session: Session, body: s.ModelVersionIn, principal: Principal) -> m.ModelVersion:
    values = _version_values(session, body.model_dump())
    return m.ModelVersion(created_by=principal.display, **values)


@router.get("/models", response_model=s.Page[s.ModelOut])
def list_models(
    session: SessionDep,
    _: Reader,
    name: Annotated[str | None, Query(description="glob, e.g. 'emtrack*'")] = None,
    tag: Annotated[str | None, Query(description="models with a version carrying this tag")] = None,
    facility: Annotated[str | None, Query(description="models deployed at this facility")] = None,
    sort: Sort = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> s.Page[s.ModelOut]:
    stmt = select(m.Model)
    if name:
        stmt = stmt.where(m.Model.name.ilike(_like(name), escape="\\"))
    if tag:
        stmt = stmt.where(
            exists().where(m.ModelVersion.model_id == m.Model.id).where(_tagged(m.ModelVersion.tags, tag))
        )
    if facility:
        stmt = stmt.where(
            exists()
            .where(m.ModelVersion.model_id == m.Model.id)
            .where(m.Deployment.model_version_id == m.ModelVersion.id)
            .where(m.Backend.id == m.Deployment.backend_id)
            .where(m.Facility.id == m.Backend.facility_id)
            .where(m.Facility.name == facility)
        )
    sortable = {"name": m.Model.name, "created_at": m.Model.created_at}
    return _page(session, stmt, m.Model.id, sortable, sort, limit, offset, _model_out)


@router.post("/models", status_code=201, response_model=s.ModelOut, responses=CREATE)
def create_model(body: s.ModelIn, session: SessionDep, principal: Admin, request: Request) -> s.ModelOut:
    model = m.Model(name=body.name, description=body.description)
    model.versions = [_new_version(session, v, principal) for v in body.versions]
    session.add(model)
    _commit(session, f"model {body.name!r} (or one of its versions)")
    _refresh_router(request)
    return _model_out(model)


@router.get("/models/{ident}", response_model=s.ModelOut, responses=ONE)
def get_model(ident: Ident, session: SessionDep, _: Reader) -> s.ModelOut:
    return _model_out(_get(session, m.Model, ident, "model"))


@router.patch("/models/{ident}", response_model=s.ModelOut, responses=CHANGE)
def update_model(ident: Ident, body: s.ModelPatch, session: SessionDep, _: Admin) -> s.ModelOut:
    model = _get(session, m.Model, ident, "model")
    _apply(model, body.model_dump(exclude_unset=True))
    _commit(session, "model")
    return _model_out(model)


@router.delete("/models/{ident}", status_code=204, responses=DELETE)
def delete_model(ident: Ident, session: SessionDep, _: Admin, request: Request) -> Response:
    return _delete(session, m.Model, ident, "model", request)


@router.get("/models/{ident}/versions", response_model=s.Page[s.ModelVersionOut], responses=ONE)
def list_versions(
    ident: Ident,
    session: SessionDep,
    _: Reader,
    tag: str | None = None,
    sort: Sort = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> s.Page[s.ModelVersionOut]:
    _get(session, m.Model, ident, "model")
    stmt = select(m.ModelVersion).where(m.ModelVersion.model_id == ident)
    if tag:
        stmt = stmt.where(_tagged(m.ModelVersion.tags, tag))
    sortable = {"version": m.ModelVersion.version, "created_at": m.ModelVersion.created_at}
    return _page(
        session, stmt, m.ModelVersion.id, sortable, sort, limit, offset, lambda v: _version_out(session, v)
    )


@router.post("/models/{ident}/versions", status_code=201, response_model=s.ModelVersionOut, responses=CHANGE)
def create_version(
    ident: Ident, body: s.ModelVersionIn, session: SessionDep, principal: Admin, request: Request
) -> s.ModelVersionOut:
    model = _get(session, m.Model, ident, "model")
    version = _new_version(session, body, principal)
    model.versions.append(version)
    _commit(session, f"version {body.version!r} of model {model.name!r}")
    _refresh_router(request)
    return _version_out(session, version)


@router.get("/model-versions/{ident}", response_model=s.ModelVersionOut, responses=ONE)
def get_version(ident: Ident, session: SessionDep, _: Reader) -> s.ModelVersionOut:
    return _version_out(session, _get(session, m.ModelVersion, ident, "model version"))


@router.patch("/model-versions/{ident}", response_model=s.ModelVersionOut, responses=CHANGE)
def update_version(
    ident: Ident, body: s.ModelVersionPatch, session: SessionDep, _: Admin, request: Request
) -> s.ModelVersionOut:
    version = _get(session, m.ModelVersion, ident, "model version")
    _apply(version, _version_values(session, body.model_dump(exclude_unset=True)))
    _commit(session, "model version")
    _refresh_router(request)
    return _version_out(session, version)


@router.delete("/model-versions/{ident}", status_code=204, responses=DELETE)
def delete_version(ident: Ident, session: SessionDep, _: Admin, request: Request) -> Response:
    return _delete(session, m.ModelVersion, ident, "model version", request)


# -- deployments --------------------------------------------------------------------------------------
def _deployment_select() -> Any:  # a Select
    return (
        select(m.Deployment, m.Backend.address, m.Facility.name, m.Model.name, m.ModelVersion.version)
        .join(m.Backend, m.Deployment.backend_id == m.Backend.id)
        .join(m.Facility, m.Backend.facility_id == m.Facility.id)
        .join(m.ModelVersion, m.Deployment.model_version_id == m.ModelVersion.id)
        .join(m.Model, m.ModelVersion.model_id == m.Model.id)
    )


def _deployment_out(row: Any) -> s.DeploymentOut:
    d, address, facility, model, version = row
    return s.DeploymentOut(
        id=d.id,
        backend_id=d.backend_id,
        backend=RouterBackend.make_id(facility, address),
        facility=facility,
        model_version_id=d.model_version_id,
        model=model,
        version=version,
        state=d.state,
        consistency=d.consistency,
        consistency_reason=d.consistency_reason,
        checked_at=d.checked_at,
        created_at=d.created_at,
    )


def _one_deployment(session: Session, ident: int) -> s.DeploymentOut:
    row = session.execute(_deployment_select().where(m.Deployment.id == ident)).first()
    if row is None:
        raise NotFound(f"no deployment with id {ident}")
    return _deployment_out(row)


@router.get("/deployments", response_model=s.Page[s.DeploymentOut])
def list_deployments(
    session: SessionDep,
    _: Reader,
    facility: str | None = None,
    model: str | None = None,
    version: str | None = None,
    backend_id: Annotated[int | None, Query(ge=1, le=s.INT32_MAX)] = None,
    state: str | None = None,
    consistency: Annotated[
        str | None, Query(description="the consistency check's verdict, e.g. 'mismatch'")
    ] = None,
    sort: Sort = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> s.Page[s.DeploymentOut]:
    stmt = _deployment_select()
    for column, value in (
        (m.Facility.name, facility),
        (m.Model.name, model),
        (m.ModelVersion.version, version),
        (m.Deployment.backend_id, backend_id),
        (m.Deployment.state, state),
        (m.Deployment.consistency, consistency),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    sortable = {"model": m.Model.name, "facility": m.Facility.name, "created_at": m.Deployment.created_at}
    return _page(session, stmt, m.Deployment.id, sortable, sort, limit, offset, _deployment_out)


def _insert_or_register(session: Session, body: s.DeploymentIn, version: m.ModelVersion) -> m.Deployment:
    what = f"deployment of {body.model}:{body.version} on backend {body.backend_id}"
    conflict = Conflict(f"{what} already exists (names must be unique)")
    # Two rounds: the consistency check may insert the 'observed' row between our read and our
    # insert (it probes a backend as soon as it is registered); the second round converts that row.
    for _ in range(2):
        deployment = session.scalar(
            select(m.Deployment).where(
                m.Deployment.backend_id == body.backend_id, m.Deployment.model_version_id == version.id
            )
        )
        if deployment is None:
            deployment = m.Deployment(
                backend_id=body.backend_id, model_version_id=version.id, state=body.state
            )
            session.add(deployment)
        elif deployment.state == "observed" and body.state == "registered":
            deployment.state = "registered"  # the gateway saw it there first; now an admin vouches for it
        else:
            raise conflict
        try:
            session.commit()
            return deployment
        except IntegrityError:
            session.rollback()
    raise conflict


@router.post("/deployments", status_code=201, response_model=s.DeploymentOut, responses=CREATE)
def create_deployment(
    body: s.DeploymentIn, session: SessionDep, _: Admin, request: Request
) -> s.DeploymentOut:
    if session.get(m.Backend, body.backend_id) is None:
        raise InvalidField(f"backend_id: no backend with id {body.backend_id}", ("body", "backend_id"))
    version = session.scalar(
        select(m.ModelVersion)
        .join(m.Model, m.ModelVersion.model_id == m.Model.id)
        .where(m.Model.name == body.model, m.ModelVersion.version == body.version)
    )
    if version is None:
        raise InvalidField(
            f"model: no version {body.version!r} of model {body.model!r}; register it first",
            ("body", "version"),
        )
    deployment = _insert_or_register(session, body, version)
    _refresh_router(request)
    return _one_deployment(session, deployment.id)


@router.get("/deployments/{ident}", response_model=s.DeploymentOut, responses=ONE)
def get_deployment(ident: Ident, session: SessionDep, _: Reader) -> s.DeploymentOut:
    return _one_deployment(session, ident)


@router.patch("/deployments/{ident}", response_model=s.DeploymentOut, responses=CHANGE)
def update_deployment(
    ident: Ident, body: s.DeploymentPatch, session: SessionDep, _: Admin, request: Request
) -> s.DeploymentOut:
    deployment = _get(session, m.Deployment, ident, "deployment")
    deployment.state = body.state
    _commit(session, "deployment")
    _refresh_router(request)
    return _one_deployment(session, ident)


@router.delete("/deployments/{ident}", status_code=204, responses=DELETE)
def delete_deployment(ident: Ident, session: SessionDep, _: Admin, request: Request) -> Response:
    return _delete(session, m.Deployment, ident, "deployment", request)


# -- usage (provenance) -------------------------------------------------------------------------------
def _usage_out(u: m.Usage) -> s.UsageOut:
    return s.UsageOut(
        id=u.id,
        job_id=u.job_id or None,
        dataset=u.dataset or None,
        model=u.model,
        version=u.version,
        facility=u.facility,
        backend=u.backend,
        subject=u.subject,
        issuer=u.issuer,
        n_requests=u.n_requests,
        n_inferences=u.n_inferences,
        first_seen=u.first_seen,
        last_seen=u.last_seen,
    )


def _reads_all_usage(request: Request, principal: Principal) -> bool:
    """Admins and members of ``auth.usage_reader_groups`` read everyone's usage."""
    gateway = _gateway(request)
    if not principal.groups.isdisjoint(gateway.settings.auth.usage_reader_groups):
        return True
    try:
        gateway.authorizer.authorize_admin(principal)
    except PermissionDenied:
        return False
    return True


@router.get("/usage", response_model=s.Page[s.UsageOut])
def list_usage(
    request: Request,
    session: SessionDep,
    principal: Reader,
    job_id: str | None = None,
    dataset: str | None = None,
    model: str | None = None,
    version: str | None = None,
    facility: str | None = None,
    subject: str | None = None,
    sort: Sort = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> s.Page[s.UsageOut]:
    """Provenance: which model version served which job (and dataset), where, and how much. A caller
    sees their own usage; admins and the configured usage reader groups see everyone's."""
    stmt = select(m.Usage)
    if not _reads_all_usage(request, principal):
        stmt = stmt.where(m.Usage.subject == principal.subject, m.Usage.issuer == principal.issuer)
    for column, value in (
        (m.Usage.job_id, job_id),
        (m.Usage.dataset, dataset),
        (m.Usage.model, model),
        (m.Usage.version, version),
        (m.Usage.facility, facility),
        (m.Usage.subject, subject),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    sortable = {
        "first_seen": m.Usage.first_seen,
        "last_seen": m.Usage.last_seen,
        "n_inferences": m.Usage.n_inferences,
        "n_requests": m.Usage.n_requests,
    }
    return _page(session, stmt, m.Usage.id, sortable, sort, limit, offset, _usage_out)


def install_admin_api(app: FastAPI) -> None:
    """Mount ``/api/v1`` on ``app`` with its ``{"error": ...}`` responses."""
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(router)
