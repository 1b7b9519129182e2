"""The catalog migrations ship inside the wheel, and ``db upgrade`` works from a non-editable install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from sqlalchemy import inspect

from gateway.catalog import migrate
from gateway.catalog.db import make_engine

REPO = Path(__file__).resolve().parents[2]


def test_the_package_view_is_the_top_level_migrations() -> None:
    assert (REPO / "gateway" / "migrations").resolve() == (REPO / "migrations").resolve()


def test_wheel_carries_the_migrations_and_db_upgrade_works_from_it(tmp_path: Path) -> None:
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
        f"assert gateway.__file__.startswith({str(target)!r}), gateway.__file__; "
        f"sys.exit(main(['db', 'upgrade', '--database-url', {url!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, timeout=120, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"revision {migrate.head_revision()}" in done.stdout
    engine = make_engine(url)
    try:
        assert migrate.is_current(engine)
        assert "deployment" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
