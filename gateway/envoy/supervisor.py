"""The Envoy process: started, watched, restarted if it dies, drained and stopped with the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.triton.launcher import _die_with_parent

log = logging.getLogger("gateway.envoy")


class EnvoyFailed(RuntimeError):
    """Envoy did not start or died; the message carries what it said last."""


class EnvoyProcess:
    def __init__(
        self,
        binary: Path,
        bootstrap: Path,
        workdir: Path,
        *,
        concurrency: int = 2,
        log_level: str = "warning",
        drain_time_s: float = 30.0,
        ready_timeout_s: float = 60.0,
        file_flush_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.binary = binary
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.concurrency = concurrency
        self.log_level = log_level
        self.drain_time_s = drain_time_s
        self.ready_timeout_s = ready_timeout_s
        self.file_flush_s = file_flush_s
        self._clock = clock
        self.admin_address_path = workdir / "admin-address"
        self.admin_url = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._output: deque[str] = deque(maxlen=40)
        self._reader: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._client: httpx.AsyncClient | None = None
        self.restarts = 0

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "--config-path",
            str(self.bootstrap),
            "--admin-address-path",
            str(self.admin_address_path),
            # No shared memory between runs: several gateways (and tests) may run on one host.
            "--disable-hot-restart",
            "--concurrency",
            str(self.concurrency),
            "--log-level",
            self.log_level,
            "--drain-time-s",
            str(int(self.drain_time_s)),
            "--drain-strategy",
            "gradual",
            # How often Envoy writes the usage log (Envoy's default is 1 s; it also writes at exit).
            "--file-flush-interval-msec",
            str(max(1, round(self.file_flush_s * 1000))),
        ]

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=2.0, trust_env=False)
        await self._spawn()
        self._watcher = asyncio.create_task(self._watch(), name="envoy-watch")

    async def _spawn(self) -> None:
        self.admin_address_path.unlink(missing_ok=True)
        self.admin_url = ""
        self._proc = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # no Envoy outlives the gateway
            # Its own process group: a Ctrl-C (or systemd's signal to the group) reaches the gateway,
            # which drains Envoy, instead of killing Envoy with requests in flight.
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read_output(self._proc), name="envoy-output")
        await self._wait_ready()
        log.info("envoy started (pid %d, admin %s)", self._proc.pid, self.admin_url)

    async def _read_output(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self._output.append(line)
            # Envoy's own warnings and errors reach the gateway's log; its info lines do not.
            if self._stopping:  # its shutdown chatter ("caught ENVOY_SIGTERM") is ours, not news
                log.debug("envoy: %s", line)
            elif "][critical][" in line or "][error][" in line:
                log.error("envoy: %s", line)
            elif "][warning][" in line:
                log.warning("envoy: %s", line)

    def _tail(self) -> str:
        return "\n".join(self._output) or "(no output)"

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        assert self._client is not None
        deadline = self._clock() + self.ready_timeout_s
        while self._clock() < deadline:
            if self._proc.returncode is not None:
                await asyncio.sleep(0.05)  # let the reader take the last lines
                raise EnvoyFailed(
                    f"envoy exited with status {self._proc.returncode} while starting:\n{self._tail()}"
                )
            if not self.admin_url and self.admin_address_path.is_file():
                text = self.admin_address_path.read_text().strip()
                if text:
                    self.admin_url = f"http://{text}"
            if self.admin_url:
                with contextlib.suppress(httpx.HTTPError):
                    if (await self._client.get(f"{self.admin_url}/ready")).status_code == 200:
                        return
            await asyncio.sleep(0.05)
        raise EnvoyFailed(f"envoy was not ready within {self.ready_timeout_s:.0f} s:\n{self._tail()}")

    async def _watch(self) -> None:
        """Restart Envoy if it dies on its own (with a growing pause), until stop()."""
        pause = 1.0
        while True:
            assert self._proc is not None
            code = await self._proc.wait()
            if self._stopping:
                return
            log.error(
                "envoy exited unexpectedly (status %s); restarting in %.0f s:\n%s", code, pause, self._tail()
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)
            try:
                await self._spawn()
                self.restarts += 1
                pause = 1.0
            except EnvoyFailed as exc:
                log.error("%s", exc)

    async def admin(self, method: str, path: str) -> str:
        assert self._client is not None
        if not self.admin_url:  # between a death and the restart's admin address
            raise httpx.ConnectError("envoy's admin interface is not up")
        response = await self._client.request(method, f"{self.admin_url}{path}")
        response.raise_for_status()
        return response.text

    async def counters(self, pattern: str) -> dict[str, int]:
        """Envoy's counters and gauges whose name matches the regex ``pattern``, by name (the one
        reader of its stats for the drain, the overflow watch and the usage-log write check)."""
        data = json.loads(await self.admin("GET", f"/stats?format=json&filter={pattern}"))
        return {s["name"]: int(s["value"]) for s in data.get("stats", []) if "name" in s and "value" in s}

    async def listener_ports(self) -> dict[str, int]:
        """Listener name -> bound port (ports given as 0 are chosen by the kernel)."""
        data = json.loads(await self.admin("GET", "/listeners?format=json"))
        out: dict[str, int] = {}
        for entry in data.get("listener_statuses", []):
            address = entry.get("local_address", {}).get("socket_address", {})
            out[entry["name"]] = int(address.get("port_value", 0))
        return out

    async def drain(self, grace_s: float) -> None:
        """Stop taking new connections' work gracefully; let requests in flight finish within grace."""
        if self._proc is None or self._proc.returncode is not None:
            return
        with contextlib.suppress(httpx.HTTPError):
            await self.admin("POST", "/drain_listeners?graceful")
        deadline = self._clock() + grace_s
        while self._clock() < deadline:
            try:
                stats = await self.counters("downstream_rq_active$")
            except httpx.HTTPError:
                return
            # http.admin.* counts this very query.
            active = sum(value for name, value in stats.items() if not name.startswith("http.admin."))
            if active == 0:
                return
            await asyncio.sleep(0.1)
        log.warning("drain grace of %.0f s ran out with requests still in flight", grace_s)

    async def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in (self._watcher, self._reader):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._client is not None:
            await self._client.aclose()
