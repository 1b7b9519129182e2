"""The base install stays thin: httpx, authlib and cryptography are extras, imported only by the
features that need them, with an error that names the extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import sonic_client
from sonic_client import Client, MissingDependencyError, OAuth2TokenProvider

CLIENT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    for stop in "[<>=~!; ":
        requirement = requirement.split(stop)[0]
    return requirement.lower()


def test_optional_packages_are_extras() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert {_name(r) for r in project["dependencies"]} == {"numpy", "tritonclient"}
    assert project["dependencies"][1] == "tritonclient[grpc]>=2.51"  # not [http] or [all]
    extras = project["optional-dependencies"]
    assert {_name(r) for r in extras["http"]} == {"httpx"}
    assert {_name(r) for r in extras["oidc"]} == {"authlib", "httpx"}


def test_py_typed_is_shipped() -> None:
    pyproject = tomllib.loads((CLIENT / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["package-data"]["sonic_client"] == ["py.typed"]
    assert (Path(sonic_client.__file__).parent / "py.typed").is_file()


def test_http_without_httpx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(MissingDependencyError) as info:
        Client("http://127.0.0.1:1", token="t")
    assert str(info.value) == (
        "The HTTP transport (http:// and https:// gateway urls) needs the 'httpx' package, which "
        "is not installed. Install the client with that feature: pip install 'sonic-client[http]'")
    assert isinstance(info.value, ImportError)
    assert info.value.name == "httpx"
    assert info.value.extra == "http"


def test_oauth2_without_authlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "authlib", None)
    with pytest.raises(MissingDependencyError, match=r"OAuth2 token refresh \(OAuth2TokenProvider\) "
                       r"needs the 'authlib' package.*pip install 'sonic-client\[oidc\]'"):
        OAuth2TokenProvider("https://idp.example.org/token", "client-id", "secret")


BASE_INSTALL = r"""
import importlib.abc
import sys

OPTIONAL = {"httpx", "httpcore", "authlib", "cryptography", "anyio"}


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())

import sonic_client
from sonic_client import Client, MissingDependencyError, OAuth2TokenProvider
from sonic_client._cli import main

with Client("127.0.0.1:1", token="t") as c:
    pass
assert main(["token"]) == 0
try:
    Client("https://gateway.example.org", token="t")
except MissingDependencyError as exc:
    print("http:", exc.extra)
try:
    OAuth2TokenProvider("https://idp.example.org/token", "client-id")
except MissingDependencyError as exc:
    print("oidc:", exc.extra)
print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in OPTIONAL))
"""


def test_base_install_runs_without_the_optional_packages() -> None:
    """A fresh interpreter where httpx, authlib and cryptography cannot be imported: the package,
    a gRPC client and the CLI work; HTTP and OAuth2 say which extra to install."""
    done = subprocess.run([sys.executable, "-c", BASE_INSTALL], capture_output=True, text=True,
                          timeout=120, env={"BEARER_TOKEN": "opaque", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-3:] == ["http: http", "oidc: oidc", "loaded: []"], done.stdout
