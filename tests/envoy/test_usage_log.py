"""The usage log follower: every complete line once, across partial writes, restarts and rotation.

Envoy is played by the test here (appends, renames, reopens); the real Envoy's side of rotation is
tested in test_data_plane.py.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from gateway.envoy.usage_log import UsageLog


class Sink:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.flushed: list[int] = []  # lines seen at each flush

    def line(self, line: bytes) -> None:
        if line == b"boom":
            raise ValueError("not a usage line")
        self.lines.append(line)

    def flush(self) -> None:
        self.flushed.append(len(self.lines))


class FakeEnvoy:
    """Appends lines to the log; on reopen (as Envoy does) closes the old file and creates a new one."""

    def __init__(self, path: Path, *, reopens: bool = True) -> None:
        self.path = path
        self.reopens = reopens
        self.asked = 0
        self._fd = self._append()  # held open, like Envoy's descriptor

    def _append(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, data: bytes) -> None:
        os.write(self._fd, data)

    async def reopen(self) -> None:
        self.asked += 1
        if self.reopens:
            os.close(self._fd)
            self._fd = self._append()

    def close(self) -> None:
        os.close(self._fd)


def _follower(path: Path, sink: Sink, envoy: FakeEnvoy, **kwargs: int) -> UsageLog:
    return UsageLog(path, sink, envoy.reopen, interval_s=3600, **kwargs)  # polled by the test


async def test_complete_lines_once_and_a_partial_line_waits_for_its_end(tmp_path: Path) -> None:
    path = tmp_path / "usage.log"
    envoy, sink = FakeEnvoy(path), Sink()
    follower = _follower(path, sink, envoy)
    await follower.start()
    envoy.write(b'{"a":1}\n{"b":2}\n{"c"')
    await follower.poll()
    assert sink.lines == [b'{"a":1}', b'{"b":2}']
    assert sink.flushed[-1] == 2  # each read ends with a flush of what it read
    await follower.poll()
    assert sink.lines == [b'{"a":1}', b'{"b":2}']  # nothing twice, the partial line not yet
    envoy.write(b":3}\n")
    await follower.poll()
    assert sink.lines[2:] == [b'{"c":3}']
    assert follower.checkpoint.read_text().split() == [str(os.stat(path).st_ino), str(path.stat().st_size)]
    envoy.close()
    await follower.stop(remove=True)
    assert not path.exists()
    assert not follower.checkpoint.exists()


async def test_a_restart_resumes_where_the_last_run_stopped_reading(tmp_path: Path) -> None:
    path = tmp_path / "usage.log"
    envoy, sink = FakeEnvoy(path), Sink()
    first = _follower(path, sink, envoy)
    await first.start()
    envoy.write(b"1\n2\n")
    await first.poll()
    await first.stop()  # a control plane that went away (or crashed after its last poll)
    envoy.write(b"3\n4\n")  # written while no one was reading
    second = _follower(path, sink, envoy)
    await second.start()
    assert sink.lines == [b"1", b"2", b"3", b"4"]
    envoy.write(b"5\n")
    await second.poll()
    assert sink.lines[4:] == [b"5"]
    envoy.close()
    await second.stop()


async def test_rotation_reads_the_old_file_to_its_end_then_follows_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "usage.log"
    envoy, sink = FakeEnvoy(path), Sink()
    follower = _follower(path, sink, envoy, rotate_bytes=4)
    await follower.start()
    envoy.write(b"1\n2\n")
    await follower.poll()  # 4 bytes read: rotate
    assert follower.rotated.exists()
    assert path.exists()
    assert envoy.asked == 1
    assert sink.lines == [b"1", b"2"]
    envoy.write(b"3\n")  # the fake reopened at once: this is the new file
    await follower.poll()  # the new file exists: the old one is finished and deleted
    assert not follower.rotated.exists()
    assert sink.lines == [b"1", b"2", b"3"]
    envoy.write(b"4\n")
    await follower.poll()
    assert sink.lines == [b"1", b"2", b"3", b"4"]
    envoy.close()
    await follower.stop(remove=True)
    assert os.listdir(tmp_path) == []


async def test_lines_written_to_the_old_file_before_envoy_reopens_are_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "usage.log"
    envoy, sink = FakeEnvoy(path, reopens=False), Sink()
    follower = _follower(path, sink, envoy, rotate_bytes=2)
    await follower.start()
    envoy.write(b"1\n")
    await follower.poll()  # renamed; Envoy has not reopened yet and keeps writing the old file
    envoy.write(b"2\n")
    await follower.poll()
    assert envoy.asked == 2  # asked again while the new file is missing
    assert sink.lines == [b"1", b"2"]
    envoy.reopens = True
    envoy.write(b"3\n")
    await envoy.reopen()
    envoy.write(b"4\n")
    await follower.poll()
    assert sink.lines == [b"1", b"2", b"3", b"4"]
    assert not follower.rotated.exists()
    envoy.close()
    await follower.stop()


async def test_a_run_that_ended_mid_rotation_is_finished_by_the_next(tmp_path: Path) -> None:
    path = tmp_path / "usage.log"
    envoy, sink = FakeEnvoy(path, reopens=False), Sink()
    first = _follower(path, sink, envoy, rotate_bytes=2)
    await first.start()
    envoy.write(b"1\n")
    await first.poll()  # renamed, Envoy not yet reopened
    envoy.write(b"2\n")  # to the old file, unread
    await first.stop()
    envoy.reopens = True
    await envoy.reopen()
    envoy.write(b"3\n")  # the new file
    second = _follower(path, sink, envoy, rotate_bytes=1 << 20)
    await second.start()
    assert sink.lines == [b"1", b"2", b"3"]
    assert not second.rotated.exists()
    envoy.close()
    await second.stop()


async def test_a_bad_line_is_logged_and_skipped_and_the_rest_are_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "usage.log"
    envoy, sink = FakeEnvoy(path), Sink()
    follower = _follower(path, sink, envoy)
    await follower.start()
    envoy.write(b"1\nboom\n2\n")
    with caplog.at_level(logging.ERROR, logger="gateway.envoy.usage"):
        await follower.poll()
    assert sink.lines == [b"1", b"2"]
    assert (follower.lines, follower.bad_lines) == (3, 1)
    assert "could not record a fast-path usage line (4 bytes); skipped" in caplog.text
    envoy.close()
    await follower.stop()
