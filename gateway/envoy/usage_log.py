"""Following the usage log Envoy appends to: every complete line reaches the sink exactly once.

Envoy writes one JSON line per fast-path request (``render.usage_log_format``) through its file
access logger and flushes every ``flush`` interval and at exit. This follower reads what was added
since it last looked, hands complete lines on, and remembers how far it got in a checkpoint file
(``<log>.offset``: the file's inode and the offset read), so a control plane that restarts against
the same work directory resumes where it stopped: lines Envoy wrote while no one was reading are
recorded, none twice. The file is rotated once it is ``rotate_bytes`` long: renamed to ``<log>.1``,
Envoy told to reopen its logs (``POST /reopen_logs``; it then creates ``<log>`` again, after closing
the old file), and the old file read to its end and deleted once the new one appears.

Fail-safe, not fail-silent: a line that cannot be parsed is logged and skipped (the rest are read);
what Envoy could not write is counted by Envoy and reported by the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from gateway.core.periodic import Periodic, Sleep

log = logging.getLogger("gateway.envoy.usage")

CHUNK_BYTES = 1 << 20
# Lines handled between two yields to the event loop: the slow path and the ADS stream share it.
LINES_PER_YIELD = 500


class LineSink(Protocol):
    def line(self, line: bytes) -> None:
        """One complete line (raising skips it: it is logged, the rest are read)."""

    def flush(self) -> None:
        """The end of one read: what its lines add up to can be recorded now. Never raises."""


class UsageLog:
    def __init__(
        self,
        path: Path,
        sink: LineSink,
        reopen: Callable[[], Awaitable[object]],
        *,
        interval_s: float = 0.5,
        rotate_bytes: int = 64 << 20,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.path = path
        self.rotated = path.with_name(path.name + ".1")
        self.checkpoint = path.with_name(path.name + ".offset")
        self.rotate_bytes = rotate_bytes
        self._sink = sink
        self._reopen = reopen
        self._fd: int | None = None  # the file being read (renamed to ``rotated`` while rotating)
        self._inode = 0
        self._offset = 0
        self._saved = (0, 0)
        self._rotating = False
        self._periodic = Periodic(self.poll, interval_s, "envoy-usage-log", sleep=sleep)
        self.lines = 0
        self.bad_lines = 0
        self.rotations = 0

    # -- reading ---------------------------------------------------------------------------------

    def _open(self, path: Path, resume: tuple[int, int] | None = None) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        self._fd, self._inode = fd, os.fstat(fd).st_ino
        self._offset = resume[1] if resume is not None and resume[0] == self._inode else 0
        return True

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None

    async def _read(self) -> None:
        """Every complete line added to the open file since the last read (a partial last line
        waits for its end: Envoy may be writing it)."""
        fd = self._fd
        if fd is None:
            return
        handled = 0
        while data := os.pread(fd, CHUNK_BYTES, self._offset):
            end = data.rfind(b"\n")
            if end < 0:
                if len(data) < CHUNK_BYTES:
                    break  # the rest of a line still being written
                end = len(data) - 1  # a line longer than a chunk is no usage line: skip past it
            for line in data[:end].split(b"\n"):
                if line:
                    self._handle(line)
                    handled += 1
                    if handled % LINES_PER_YIELD == 0:
                        await asyncio.sleep(0)
            self._offset += end + 1
        self._sink.flush()
        self._save()

    def _handle(self, line: bytes) -> None:
        self.lines += 1
        try:
            self._sink.line(line)
        except Exception:  # one odd line must not stop the rest from being recorded
            self.bad_lines += 1
            log.exception("could not record a fast-path usage line (%d bytes); skipped", len(line))

    def _save(self) -> None:
        """Remember how far the open file was read (atomically: a crash leaves the old or the new)."""
        position = (self._inode, self._offset)
        if self._fd is None or position == self._saved:
            return
        scratch = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
        scratch.write_text(f"{self._inode} {self._offset}\n", encoding="ascii")
        os.replace(scratch, self.checkpoint)
        self._saved = position

    def _load(self) -> tuple[int, int] | None:
        try:
            inode, offset = self.checkpoint.read_text(encoding="ascii").split()
            return int(inode), int(offset)
        except (OSError, ValueError):
            return None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read what an earlier run left unread (a rotated file first), then follow the log."""
        resume = self._load()
        if self._open(self.rotated, resume):
            await self._read()
            self._close()
            self.rotated.unlink()
        self._open(self.path, resume)
        await self._read()
        self._periodic.start()

    async def poll(self) -> None:
        if self._fd is None and not self._open(self.path):
            return  # Envoy has not created it yet
        await self._read()
        if self._rotating:
            await self._finish_rotation()
        elif self._offset >= self.rotate_bytes:
            os.replace(self.path, self.rotated)  # the open descriptor follows the file
            self._rotating = True
            await self._ask_reopen()

    async def _ask_reopen(self) -> None:
        try:
            await self._reopen()
        except Exception as exc:  # Envoy restarting: asked again on the next poll
            log.debug("envoy did not take the usage log's reopen yet: %s", exc)

    async def _finish_rotation(self) -> None:
        if not self.path.exists():
            await self._ask_reopen()  # repeated until Envoy has reopened: harmless
            return
        # Envoy closes the old file before it creates the new one: the old file is complete.
        await self._read()
        self._close()
        self.rotated.unlink(missing_ok=True)
        self._rotating = False
        self.rotations += 1
        self._open(self.path)
        await self._read()

    async def stop(self, *, remove: bool = False) -> None:
        """Read the log to its end (call after Envoy has exited, so nothing more is coming);
        ``remove`` then deletes the log and its checkpoint, every line having been handed on."""
        await self._periodic.stop()
        await self._read()
        if self._rotating and self.path.exists():
            await self._finish_rotation()
        self._close()
        if remove and not self._rotating:
            for path in (self.path, self.checkpoint):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
