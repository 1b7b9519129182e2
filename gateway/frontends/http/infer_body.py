"""What the REST frontend reads of an infer body: the JSON header part, never the tensors.

The body is forwarded as the client sent it. Usage records want the batch size and the served
version (a regex over the first ~1 MiB of the header). The shared-memory refusal must be exact:
Triton's JSON parser decodes ``\\u`` escapes, so a byte search alone could be dodged, and it reads the
first of duplicated names where Python keeps the last, so every object key is looked at.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator
from typing import Any

from gateway.core.wire import SHARED_MEMORY_PREFIX, shared_memory_refused
from gateway.errors import InvalidArgument, PayloadTooLarge, echo

# How much of a compressed JSON header part is inflated to find the batch size / served version.
_SCAN_LIMIT = 1 << 20
_SHAPE = re.compile(rb'"inputs"\s*:\s*\[\s*\{[^{]*?"shape"\s*:\s*\[\s*(\d+)')
_MODEL_VERSION = re.compile(rb'"model_version"\s*:\s*"([^"]*)"')
_CHUNK = _SCAN_LIMIT  # so the first inflated chunk is what batch_size would scan
# Needles of the shared-memory check: the key itself, and any \u escape (which could spell it).
_NEEDLES = (SHARED_MEMORY_PREFIX.encode(), b"\\u")
_OVERLAP = max(len(n) for n in _NEEDLES) - 1


def _json_part(body: bytes, header_length: str | None, encoding: str | None) -> bytes | memoryview:
    """The JSON header part of a (possibly binary, possibly compressed) body, at most ~1 MiB of it.

    A view, not a slice: this runs on every request and every response, and slicing bytes copies.
    """
    limit = _SCAN_LIMIT
    if header_length and header_length.isdigit():
        limit = min(limit, int(header_length))
    if encoding in ("gzip", "deflate"):
        try:
            # 32 + MAX_WBITS: accept gzip and zlib framing; raw deflate is tried next.
            return zlib.decompressobj(32 + zlib.MAX_WBITS).decompress(body, limit)
        except zlib.error:
            try:
                return zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, limit)
            except zlib.error:
                return b""
    if encoding and encoding != "identity":
        return b""
    return memoryview(body)[:limit]


def served_version(body: bytes, header_length: str | None, encoding: str | None) -> str:
    match = _MODEL_VERSION.search(_json_part(body, header_length, encoding))
    return match.group(1).decode("utf-8", "replace") if match else ""


# -- the shared-memory refusal ------------------------------------------------------------------------


def _header_end(header_length: str | None) -> int | None:
    """Where the JSON header ends; None (the whole body) unless the header is a plain positive number.

    Conservative on purpose: Triton reads a malformed or zero length as "all of it is JSON".
    """
    if header_length is None:
        return None
    value = header_length.strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def _inflated(body: bytes, encoding: str, end: int | None, max_bytes: int) -> Iterator[bytes]:
    """The decompressed header part in chunks (gzip, zlib or raw deflate), refused past ``max_bytes``."""
    for wbits in (32 + zlib.MAX_WBITS, -zlib.MAX_WBITS):  # gzip/zlib framing first, then raw
        inflater = zlib.decompressobj(wbits)
        try:
            chunk = inflater.decompress(body, _CHUNK)
        except zlib.error:
            continue
        total = 0
        while True:
            if end is not None:
                chunk = chunk[: end - total]
            total += len(chunk)
            if total > max_bytes:
                raise PayloadTooLarge(
                    f"the request body inflates to more than the gateway's limit of {max_bytes} bytes "
                    "(routing.max_http_body_bytes); split the request into smaller batches"
                )
            yield chunk
            if (end is not None and total >= end) or inflater.eof:
                return
            try:
                if inflater.unconsumed_tail:
                    chunk = inflater.decompress(inflater.unconsumed_tail, _CHUNK)
                else:
                    chunk = inflater.flush()
                    if not chunk:
                        return
            except zlib.error as exc:
                raise InvalidArgument(f"malformed request: the {encoding} body is corrupt") from exc
    raise InvalidArgument(f"malformed request: the body is not valid {encoding} data")


class _SharedMemoryKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Every name of every object, duplicates included: whichever one Triton would read is checked.
    for key, _ in pairs:
        if key.startswith(SHARED_MEMORY_PREFIX):
            raise _SharedMemoryKey(key)
    return dict(pairs)


def _check_json(header: bytes) -> None:
    try:
        json.loads(header.decode("utf-8", "surrogateescape"), object_pairs_hook=_refuse_keys)
    except _SharedMemoryKey as hit:
        raise shared_memory_refused(hit.key) from None
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"malformed request: the JSON header is not valid JSON ({exc})") from exc


def checked_batch_size(body: bytes, header_length: str | None, encoding: str | None, max_bytes: int) -> int:
    """The batch size of a request whose JSON header names no shared memory anywhere (else
    :class:`InvalidArgument`), reading the body once.

    Fast path (every request): a byte search of the header part for the key and for ``\\u``, which
    ordinary requests do not contain; no copy of an uncompressed body. Only a header containing one
    is parsed, with every object's names checked. A compressed body is searched as it inflates and
    inflated a second time, whole, only when it must be parsed.
    """
    match = _SHAPE.search(_checked_head(body, header_length, encoding, max_bytes))
    return int(match.group(1)) if match else 0


def _checked_head(
    body: bytes, header_length: str | None, encoding: str | None, max_bytes: int
) -> bytes | memoryview:
    """The shared-memory check; returns what the batch size is read from (a compressed body's first
    inflated chunk, which the check has made already, instead of inflating it again)."""
    end = _header_end(header_length)
    coding = (encoding or "").strip().lower()
    if coding in ("", "identity"):
        stop = len(body) if end is None else min(end, len(body))
        if any(body.find(needle, 0, stop) >= 0 for needle in _NEEDLES):
            _check_json(body[:stop])
        return _json_part(body, header_length, encoding)
    if coding not in ("gzip", "deflate"):
        raise InvalidArgument(
            f"Content-Encoding {echo(coding)} is not supported; send gzip, deflate or identity"
        )
    head: bytes | None = None
    tail = b""
    for chunk in _inflated(body, coding, end, max_bytes):
        if head is None:
            head = chunk  # at most _CHUNK (= _SCAN_LIMIT) bytes, and no more than the header
        seam = tail + chunk[:_OVERLAP]  # a needle split across two chunks
        if any(needle in chunk or needle in seam for needle in _NEEDLES):
            _check_json(b"".join(_inflated(body, coding, end, max_bytes)))
            break
        tail = chunk[-_OVERLAP:]
    return head or b""
