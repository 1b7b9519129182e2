"""What a wheel carries and an install pulls in, and which Pythons the set-up accepts.

The catalog migrations and the model repository ship inside the wheel, so ``db upgrade`` and the
local Triton facility work from a non-editable install.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from sqlalchemy import inspect

from gateway.catalog import migrate
from gateway.catalog.db import make_engine

REPO = Path(__file__).resolve().parents[2]


def test_the_package_view_is_the_top_level_migrations() -> None:
    assert (REPO / "gateway" / "migrations").resolve() == (REPO / "migrations").resolve()


def test_the_package_view_is_the_top_level_model_repository() -> None:
    assert (REPO / "gateway" / "model_repository").resolve() == (REPO / "model_repository").resolve()


def test_wheel_carries_migrations_and_models_and_works_from_an_install(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    leftovers = [REPO / "build"] if not (REPO / "build").exists() else []  # setuptools builds in-tree
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(REPO)],
            check=True,
            timeout=240,
            capture_output=True,
        )
    finally:
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
    [wheel] = wheels.glob("sonic_gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"gateway/{p.relative_to(REPO).as_posix()}" for p in (REPO / "migrations").rglob("*.py")}
    assert expected <= names
    assert "gateway/migrations/script.py.mako" in names
    models = {
        f"gateway/{p.relative_to(REPO).as_posix()}"
        for p in (REPO / "model_repository").rglob("*")
        if p.suffix in {".py", ".pbtxt"}
    }
    assert models
    assert models <= names

    # A plain (non-editable) install of that wheel, ahead of the editable one on the path, run from
    # a directory without the sources: `sonic-gateway db upgrade` must find its migrations inside it.
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("SONIC_GATEWAY_MIGRATIONS", None)
    code = (
        "import sys, gateway; from gateway.cli import main; "
        "from gateway.triton.launcher import DEFAULT_MODEL_REPOSITORY; "
        f"assert gateway.__file__.startswith({str(target)!r}), gateway.__file__; "
        "print('models', DEFAULT_MODEL_REPOSITORY); "
        f"sys.exit(main(['db', 'upgrade', '--database-url', {url!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, timeout=120, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"revision {migrate.head_revision()}" in done.stdout
    # The local Triton facility (and so the demo) serves the installed copy of the models by default.
    [served] = [
        Path(line.split(" ", 1)[1]) for line in done.stdout.splitlines() if line.startswith("models ")
    ]
    assert served.is_relative_to(target)
    assert sorted(p.parent.name for p in served.glob("*/config.pbtxt")) == sorted(
        p.parent.name for p in (REPO / "model_repository").glob("*/config.pbtxt")
    )
    engine = make_engine(url)
    try:
        assert migrate.is_current(engine)
        assert "deployment" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


# ---- what an install pulls in, and which Pythons the set-up supports ---------------------------------

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# Triton's HTTP client tree (tritonclient[http]): only tests, docs and benchmarks need it.
HTTP_CLIENT_TREE = {"aiohttp", "gevent", "geventhttpclient", "greenlet"}


def _requirements(extra: str | None = None) -> list[Requirement]:
    """The base requirements, or one extra's, with the project's extras on itself expanded."""
    raw = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    found: list[Requirement] = []
    for req in map(Requirement, raw):
        if canonicalize_name(req.name) == canonicalize_name(PROJECT["name"]):
            found += [r for e in sorted(req.extras) for r in _requirements(e)]
        else:
            found.append(req)
    return found


def _installed_closure(requirements: list[Requirement]) -> dict[str, list[Requirement]]:
    """Every distribution these requirements pull in, by the metadata of what is installed here.

    Maps each distribution's name to the requirements on it found along the way.
    """
    closure: dict[str, list[Requirement]] = {}
    seen: set[tuple[str, str]] = set()
    pending = list(requirements)
    while pending:
        req = pending.pop()
        name = canonicalize_name(req.name)
        closure.setdefault(name, []).append(req)
        extras = {"", *req.extras}
        if not extras - {e for n, e in seen if n == name}:
            continue
        seen.update((name, e) for e in extras)
        for raw in importlib.metadata.distribution(name).requires or []:
            sub = Requirement(raw)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                pending.append(sub)
    return closure


def test_a_plain_install_leaves_out_the_http_client_tree_and_the_numpy_pin() -> None:
    closure = _installed_closure(_requirements())
    assert HTTP_CLIENT_TREE.isdisjoint(closure), sorted(HTTP_CLIENT_TREE & set(closure))
    # NumPy 2 stays possible for the gateway: only the Triton models' extra holds it back.
    assert all(Version("2.0") in r.specifier for r in closure.get("numpy", [])), closure["numpy"]
    triton = _installed_closure(_requirements("triton"))
    assert any(Version("2.0") not in r.specifier for r in triton["numpy"])
    # What the tests need of it is declared where the tests are installed.
    assert HTTP_CLIENT_TREE.issubset(_installed_closure(_requirements("dev")))


def _imports(path: Path) -> Iterator[tuple[str, bool]]:
    """Top-level third-party modules ``path`` imports, each with whether it is guarded (optional)."""
    tree = ast.parse(path.read_text(), str(path))
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in {"ImportError", "ModuleNotFoundError"}
            for h in node.handlers
        ):
            guarded.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.partition(".")[0]
            if top not in sys.stdlib_module_names and top != "gateway":
                yield top, id(node) in guarded


def test_the_gateway_imports_only_what_it_declares() -> None:
    # Each distribution the package imports is named in its own requirements, not merely pulled in
    # by another one; an optional (ImportError-guarded) import may come from an extra, and the demo
    # from the demo extra.
    base = {canonicalize_name(r.name) for r in _requirements()}
    extras = {canonicalize_name(r.name) for e in PROJECT["optional-dependencies"] for r in _requirements(e)}
    demo = base | {canonicalize_name(r.name) for r in _requirements("demo")}
    providers = importlib.metadata.packages_distributions()
    undeclared = []
    for path in sorted((REPO / "gateway").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith(("gateway/model_repository/", "gateway/migrations/versions/")):
            continue  # run by Triton's stub / Alembic, not imported by the package
        for module, optional in _imports(path):
            allowed = demo if relative == "gateway/demo.py" else extras | base if optional else base
            dists = {canonicalize_name(d) for d in providers.get(module, [])}
            if not dists & allowed:
                undeclared.append(f"{relative}: {module} (from {sorted(dists) or 'nothing installed'})")
    assert undeclared == []


def _makefile_pythons() -> list[str]:
    match = re.search(r"^SUPPORTED_PYTHONS := (.+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match is not None
    return match.group(1).split()


def test_the_supported_pythons_are_stated_once_and_agree() -> None:
    supported = _makefile_pythons()
    floor = supported[0]
    assert PROJECT["requires-python"] == f">={floor}"
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py" + floor.replace(".", "")
    assert PYPROJECT["tool"]["mypy"]["python_version"] == floor  # type-checked at the floor
    readme = (REPO / "README.md").read_text()
    assert f"Python {' or '.join(supported)}" in readme
    # The suite itself runs on one of them (CI: the floor).
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in supported


@pytest.mark.parametrize("version", ["3.10", "3.13"])
def test_make_refuses_an_unsupported_python_before_creating_anything(tmp_path: Path, version: str) -> None:
    project = tmp_path / "project"
    (project / "client").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "client/pyproject.toml"):
        shutil.copy(REPO / name, project / name)
    # An interpreter that answers the version probe as that Python would.
    python = tmp_path / f"python{version}"
    python.write_text(f"#!/bin/sh\necho {version}\n")
    python.chmod(0o755)
    for target in ("demo", "test"):
        done = subprocess.run(
            ["make", "-C", str(project), target, f"PYTHON={python}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        assert f"Python {version} ({python}) is not supported" in done.stderr
        assert " ".join(_makefile_pythons()) in done.stderr
        assert not (project / ".venv").exists()


def test_make_accepts_this_python(tmp_path: Path) -> None:
    if f"{sys.version_info.major}.{sys.version_info.minor}" not in _makefile_pythons():
        pytest.fail("the suite runs on a Python the Makefile refuses")
    done = subprocess.run(
        ["make", "-C", str(REPO), "check-python", f"PYTHON={sys.executable}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


SETUPTOOLS_NOTICE = re.compile(r"Setuptools\w*Warning|BuildBackendWarning|InformationOnly|deprecated|careful")


@pytest.mark.parametrize("project", [".", "client"])
def test_the_readme_set_up_builds_without_setuptools_notices(tmp_path: Path, project: str) -> None:
    # What `make` runs (an editable install), verbose so the build backend's warnings are shown.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--verbose", "--target", str(tmp_path),
         "-e", str(REPO / project)],
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    notices = [line for line in (done.stdout + done.stderr).splitlines() if SETUPTOOLS_NOTICE.search(line)]
    assert notices == []
