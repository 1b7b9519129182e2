"""Start a local Triton facility from the ``tritonserver`` binary inside the ``nvidia-pytriton`` wheel.

Two pitfalls are handled here: the Python backend needs the stub built for this interpreter's
version placed in its backend directory (pytriton ships one per version), and the stub links
``libpython3.X.so``, so this interpreter's own ``lib/`` must come first on ``LD_LIBRARY_PATH`` (with
another build of the same version the stub fails with a ``_thread.RLock`` error).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
# gateway/model_repository: a symlink to the top-level model_repository/ in the sources, package data
# in a wheel, so the default holds in any install.
DEFAULT_MODEL_REPOSITORY = (Path(__file__).resolve().parents[1] / "model_repository").resolve()


class TritonError(Exception):
    """Triton could not be found, started, or did not become ready; the message says why."""


def pytriton_dist() -> Path:
    try:
        import pytriton
    except ImportError as exc:
        raise TritonError(
            "the tritonserver binary comes from the nvidia-pytriton wheel, which is not installed; "
            "install it with: pip install 'sonic-gateway[triton]'"
        ) from exc
    dist = Path(pytriton.__file__).resolve().parent / "tritonserver"
    if not (dist / "bin" / "tritonserver").is_file():
        raise TritonError(f"nvidia-pytriton is installed but {dist}/bin/tritonserver is missing")
    return dist


def prepare_backend_directory(workdir: Path) -> Path:
    """A backend directory whose Python backend uses the stub matching this interpreter."""
    dist = pytriton_dist()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    python_dir = workdir / "backends" / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        link = python_dir / name
        if link.is_symlink() or link.exists():
            continue
        with contextlib.suppress(FileExistsError):  # another launcher got there first
            link.symlink_to(dist / "backends" / "python" / name)
    target = python_dir / "triton_python_backend_stub"
    if not target.exists():
        partial = target.with_name(f"{target.name}.{os.getpid()}")
        shutil.copy2(stub, partial)
        os.replace(partial, target)
    return workdir / "backends"


def triton_environment() -> dict[str, str]:
    dist = pytriton_dist()
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or str(Path(sys.base_prefix) / "lib")
    libs = [libdir, str(dist.parent.parent / "nvidia_pytriton.libs")]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(libs)
    # The stub's embedded interpreter finds its prefix by looking up "python3" on PATH; with this
    # environment's bin/ first it takes this (virtual) environment's site-packages, as pytriton does.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the parent dies, so no Triton outlives its launcher."""
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class TritonPorts:
    grpc: int
    http: int
    metrics: int


class TritonServer:
    """One ``tritonserver`` process (and its Python stubs, in the same process group)."""

    def __init__(
        self,
        ports: TritonPorts,
        model_repository: Path = DEFAULT_MODEL_REPOSITORY,
        workdir: Path | None = None,
        log_path: Path | None = None,
        host: str = "127.0.0.1",
        models: list[str] | None = None,
    ) -> None:
        self.ports = ports
        self.model_repository = Path(model_repository)
        self.workdir = Path(workdir or REPO_ROOT / ".sonic" / "triton")
        self.log_path = log_path
        self.host = host
        self.models = models
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    def command(self) -> list[str]:
        dist = pytriton_dist()
        cmd = [
            str(dist / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={prepare_backend_directory(self.workdir)}",
            f"--cache-directory={dist / 'caches'}",
            f"--grpc-address={self.host}",
            f"--http-address={self.host}",
            f"--metrics-address={self.host}",
            f"--grpc-port={self.ports.grpc}",
            f"--http-port={self.ports.http}",
            f"--metrics-port={self.ports.metrics}",
            "--exit-timeout-secs=5",
            "--log-verbose=0",
            "--pinned-memory-pool-byte-size=0",
        ]
        if self.models is not None:
            cmd.append("--model-control-mode=explicit")
            cmd += [f"--load-model={m}" for m in self.models]
        return cmd

    def start(self) -> None:
        if not self.model_repository.is_dir():
            raise TritonError(f"model repository {self.model_repository} does not exist")
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.command(),
                env=triton_environment(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.host}:{self.ports.http}/v2/health/ready"
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise TritonError(
                        f"tritonserver exited with code {self.process.returncode} while starting"
                        + (f"; see {self.log_path}" if self.log_path else "")
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                time.sleep(0.2)
        self.stop()
        raise TritonError(
            f"tritonserver did not become ready within {timeout_s:.0f} s"
            + (f"; see {self.log_path}" if self.log_path else "")
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after ``timeout_s``."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        self.process = None

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
