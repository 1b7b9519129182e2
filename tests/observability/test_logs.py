"""Log formats: JSON lines off a terminal, plain text on one, either forced by a setting."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator

import pytest

from gateway.config import load_settings
from gateway.observability.logs import configure_logging, use_json


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _emit(stream: io.StringIO) -> str:
    logging.getLogger("gateway.access").info(
        "inference",
        extra={"fields": {"request_id": "r-1", "model": "evil\nFAKE line", "status": 200, "x": None}},
    )
    return stream.getvalue()


def test_auto_is_json_off_a_terminal(restore_root: None) -> None:
    stream = io.StringIO()  # not a terminal
    configure_logging("INFO", "auto", stream)
    out = _emit(stream)
    assert out.count("\n") == 1
    line = json.loads(out)
    assert line["logger"] == "gateway.access"
    assert line["message"] == "inference"
    assert line["request_id"] == "r-1"
    assert line["model"] == "evil\nFAKE line"  # escaped by the encoder: still one line
    assert line["status"] == 200
    assert "x" not in line
    assert line["pid"] == os.getpid()
    assert line["ts"].endswith("+00:00")


def test_text_is_one_line_with_safe_fields(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "text", stream)
    out = _emit(stream)
    assert out.count("\n") == 1
    assert "INFO gateway.access: inference request_id='r-1' model='evil\\nFAKE line' status=200" in out


def test_terminal_detection_and_setting() -> None:
    read_fd, write_fd = os.pipe()
    try:
        with os.fdopen(write_fd, "w") as pipe:
            assert use_json("auto", pipe)
            assert not use_json("text", pipe)
    finally:
        os.close(read_fd)
    assert load_settings(None).log_format == "auto"
    assert load_settings(None, log_format="json", access_log=False).access_log is False
