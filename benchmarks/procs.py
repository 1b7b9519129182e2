"""Processes a benchmark starts (Tritons, the gateway, HAProxy, plain Envoy), their CPU, and their cleanup.

Every process is started in its own session and registered with a :class:`Processes` stack; leaving
the ``with`` block (normally, on an exception, or on SIGTERM/SIGINT turned into SystemExit by
:func:`exit_on_signals`) kills each process group, last started first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks import envoy as plain_envoy
from benchmarks.haproxy import HAPROXY_BIN, Frontend, render_config
from gateway.triton.launcher import DEFAULT_MODEL_REPOSITORY, REPO_ROOT, TritonPorts, TritonServer

CLK_TCK = os.sysconf("SC_CLK_TCK")
HAPROXY = HAPROXY_BIN
VENV_BIN = Path(sys.executable).parent


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(
    port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None, what: str = "server"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout_s:.0f} s")


# -- CPU accounting from /proc ---------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime+stime seconds) of a live process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of ``root`` and every live descendant (``--workers`` children included)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            got = _stat(int(entry.name))
            if got is not None:
                parents[int(entry.name)], cpu[int(entry.name)] = got
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, ()))
    return total


def children_named(root: int, comm: str) -> list[int]:
    """Pids of descendants of ``root`` whose command name is ``comm`` (e.g. the gateway's Envoy)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            got = _stat(int(entry.name))
            if got is not None:
                parents[int(entry.name)] = got[0]
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child, ppid in parents.items():
            if ppid == pid:
                todo.append(child)
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{child}/comm").read_text().strip() == comm:
                        found.append(child)
    return found


def rss_bytes(pid: int) -> int:
    """Resident set size of a live process (VmRSS), 0 if it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# -- Envoy's admin interface -----------------------------------------------------------------------


def admin_get(admin: str, path: str, timeout_s: float = 10.0) -> str:
    """GET ``path`` from an Envoy admin interface at host:port (loopback, no proxy)."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{admin}{path}", timeout=timeout_s) as response:
        text: str = response.read().decode()
        return text


def admin_stats(admin: str, regex: str) -> dict[str, int]:
    """Counters and gauges whose name matches ``regex`` (Envoy's /stats?filter=)."""
    import urllib.parse

    data = json.loads(admin_get(admin, f"/stats?format=json&filter={urllib.parse.quote(regex)}"))
    return {s["name"]: int(s["value"]) for s in data.get("stats", []) if "value" in s}


def wait_envoy_ready(admin: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"envoy exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError):
            if admin_get(admin, "/ready", 2.0).strip() == "LIVE":
                return
        time.sleep(0.1)
    raise RuntimeError(f"envoy (admin {admin}) was not ready within {timeout_s:.0f} s")


# -- lifetime ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """SIGTERM/SIGINT raise SystemExit, so every ``finally`` and ``with`` cleans up."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@dataclass
class Processes:
    """A stack of started things; ``close()`` stops them in reverse order."""

    workdir: Path
    _stops: list[Callable[[], None]] = field(default_factory=list)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        while self._stops:
            with contextlib.suppress(Exception):
                self._stops.pop()()

    def popen(self, cmd: list[str], name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed by the stop hook
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

        def stop() -> None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            out.close()

        self._stops.append(stop)
        return proc

    # -- Triton -----------------------------------------------------------------------------------

    def tritons(
        self, repos: list[Path], models: list[str] | None, name: str = "triton"
    ) -> list[TritonServer]:
        servers = []
        for i, repo in enumerate(repos):
            server = TritonServer(
                TritonPorts(free_port(), free_port(), free_port()),
                model_repository=repo,
                workdir=REPO_ROOT / ".sonic" / "triton",
                log_path=self.workdir / f"{name}{i}.log",
                models=models,
            )
            server.start()
            self._stops.append(server.stop)
            servers.append(server)
        for server in servers:
            server.wait_ready(300)
        return servers

    # -- the gateway --------------------------------------------------------------------------------

    def gateway(
        self,
        backends: list[TritonServer],
        *,
        auth: bool = True,
        workers: int = 1,
        name: str = "gateway",
        extra: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> GatewayProc:
        grpc_port, http_port, admin_port = free_port(), free_port(), free_port()
        key_dir = self.workdir / "dev-issuer"
        config = gateway_config(
            [(t.grpc_address, f"127.0.0.1:{t.ports.http}") for t in backends],
            grpc_port=grpc_port,
            http_port=http_port,
            admin_port=admin_port,
            database=self.workdir / (name + ".db"),
            key_dir=key_dir,
            auth=auth,
            extra=extra,
        )
        envoy_on = bool(config["envoy"].get("enabled", True))
        if envoy_on and workers != 1:
            log(f"--workers {workers} is not meaningful with Envoy as the data plane: the gateway runs 1")
            workers = 1
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        exe = str(VENV_BIN / "sonic-gateway")
        subprocess.run(
            [exe, "db", "upgrade", "--config", str(path)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
        proc = self.popen(
            [exe, "serve", "--config", str(path), "--workers", str(workers)],
            name,
            env={**os.environ, **env} if env else None,
        )
        wait_port(grpc_port, 60, proc, "sonic-gateway")
        wait_port(http_port, 60, proc, "sonic-gateway")
        admin = ""
        envoy_pid = None
        if envoy_on:
            admin = str(config["envoy"]["admin"])
            wait_envoy_ready(admin, 60, proc)
            found = children_named(proc.pid, "envoy")
            envoy_pid = found[0] if found else None
        return GatewayProc(proc, grpc_port, http_port, key_dir, admin, envoy_pid)

    # -- plain Envoy ------------------------------------------------------------------------------

    def envoy(
        self,
        frontends: list[plain_envoy.EnvoyFrontend],
        name: str = "envoy",
        concurrency: int = plain_envoy.CONCURRENCY,
    ) -> EnvoyProc:
        admin_port = free_port()
        path = self.workdir / f"{name}.json"
        path.write_text(plain_envoy.render_config(frontends, admin_port=admin_port))
        command = plain_envoy.command(plain_envoy.envoy_path(), str(path), concurrency=concurrency)
        proc = self.popen(command, name)
        admin = f"127.0.0.1:{admin_port}"
        wait_envoy_ready(admin, 60, proc)
        for fe in frontends:
            wait_port(fe.port, 20, proc, "envoy")
        return EnvoyProc(proc, admin)

    # -- HAProxy ------------------------------------------------------------------------------------

    def haproxy(self, frontends: list[Frontend], name: str = "haproxy") -> subprocess.Popen[bytes]:
        if not Path(HAPROXY).is_file():
            raise RuntimeError(f"{HAPROXY} is missing: install the Debian package haproxy (2.6)")
        path = self.workdir / f"{name}.cfg"
        path.write_text(render_config(frontends))
        proc = self.popen([HAPROXY, "-f", str(path), "-db"], name)
        for fe in frontends:
            wait_port(fe.port, 20, proc, "haproxy")
        return proc


def gateway_config(
    backends: list[tuple[str, str]],
    *,
    grpc_port: int,
    http_port: int,
    admin_port: int,
    database: Path,
    key_dir: Path,
    auth: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The YAML config of a benchmark gateway: backends as (gRPC, HTTP) addresses, Envoy on, no limits."""
    config: dict[str, Any] = {
        "listen": {"grpc": f"127.0.0.1:{grpc_port}", "http": f"127.0.0.1:{http_port}"},
        "database_url": f"sqlite:///{database}",
        "log_level": "WARNING",
        "auth": {"enabled": auth, "dev_issuer": {"enabled": True, "key_dir": str(key_dir)}},
        "backends": [
            {"facility": f"site{i}", "grpc": grpc, "http": http} for i, (grpc, http) in enumerate(backends)
        ],
        "routing": {"health_interval_s": 1.0},
        # The data plane: Envoy on the public ports, 2 worker threads (the default, said here so a
        # change of default does not silently change the benchmark). No `limits:` on purpose: with
        # rate limits each request also consults the rate-limit service (once: the Python path).
        "envoy": {
            "enabled": True,
            "concurrency": plain_envoy.CONCURRENCY,
            "admin": f"127.0.0.1:{admin_port}",
        },
    }
    for key, value in (extra or {}).items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    if config.get("limits"):
        raise ValueError(
            "benchmark gateways run without rate limits: the goals are for unlimited deployments "
            "(with limits, each request also asks the rate-limit service)"
        )
    return config


@dataclass
class EnvoyProc:
    proc: subprocess.Popen[bytes]
    admin: str  # host:port of its admin interface


@dataclass
class GatewayProc:
    proc: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    key_dir: Path
    admin: str = ""  # Envoy's admin host:port ("" without Envoy)
    envoy_pid: int | None = None  # the data plane, a child of the gateway process

    def tokens(self, n: int = 1, subject: str = "bench") -> list[str]:
        """``n`` distinct tokens from the development issuer the gateway trusts."""
        from gateway.auth.dev_issuer import DevIssuer
        from gateway.config import DevIssuerSettings

        issuer = DevIssuer(DevIssuerSettings(enabled=True, key_dir=str(self.key_dir)))
        return [issuer.mint(f"{subject}-{i}", lifetime_s=3600) for i in range(n)]


# -- model repositories for benchmark copies ---------------------------------------------------------


def delay_repo(
    root: Path,
    name: str,
    *,
    delay_ms: float,
    delay_us_per_item: float,
    dynamic_batching: bool = False,
    model_name: str = "delay_fp32",
) -> Path:
    """A model repository holding one copy of ``delay_fp32`` with its own service time.

    Without dynamic batching each request is one execution, as on the paper's GPU server with
    batching off: the service time per event is then exact (see :func:`benchmarks.eq4.gpu_time`).
    """
    repo = root / name
    target = repo / model_name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "delay_fp32", target)
    config = (target / "config.pbtxt").read_text()
    config = config.replace('name: "delay_fp32"', f'name: "{model_name}"')
    config = _set_param(config, "delay_ms", delay_ms)
    config = _set_param(config, "delay_us_per_item", delay_us_per_item)
    if not dynamic_batching:
        config = config.replace("dynamic_batching { }", "")
    (target / "config.pbtxt").write_text(config)
    return repo


def _set_param(config: str, key: str, value: float) -> str:
    marker = f'key: "{key}"'
    start = config.index(marker)
    value_start = config.index('string_value: "', start) + len('string_value: "')
    value_end = config.index('"', value_start)
    return config[:value_start] + f"{value:g}" + config[value_end:]
