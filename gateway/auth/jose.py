"""Strict, bounded parsing of a compact JWS before any cryptography or ``json.loads`` runs.

Only the compact serialization with three segments is accepted. Each segment must be canonical
base64url (RFC 7515 §2: no padding, no ``+``/``/``, unused bits of the last character zero); the JSON
inside must be UTF-8, nest at most :data:`MAX_JSON_DEPTH` deep, hold no duplicate member names and
no NaN/Infinity. Everything that fails raises :class:`~gateway.auth.errors.TokenRejected`; no
library exception escapes.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from gateway.auth.errors import TokenRejected

MAX_TOKEN_BYTES = 8 * 1024
MAX_JSON_DEPTH = 8
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class CompactJWS:
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _malformed(message: str, detail: str = "malformed") -> TokenRejected:
    return TokenRejected(detail, f"the bearer token is not a well-formed JWT: {message}")


def b64url_decode_strict(segment: str, what: str) -> bytes:
    """Canonical unpadded base64url only; anything else is rejected."""
    if _SEGMENT.fullmatch(segment) is None:
        raise _malformed(f"the {what} is not unpadded base64url")
    if len(segment) % 4 == 1:
        raise _malformed(f"the {what} has an impossible base64url length")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise _malformed(f"the {what} is not valid base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise _malformed(f"the {what} is not canonical base64url")
    return raw


def json_depth_exceeds(text: str, limit: int) -> bool:
    """True when arrays/objects in ``text`` nest deeper than ``limit`` (strings are skipped)."""
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate member name")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def loads_strict(raw: bytes, what: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` behind an encoding check and a nesting cap; errors become TokenRejected."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed(f"the {what} is not UTF-8") from None
    if json_depth_exceeds(text, max_depth):
        raise _malformed(f"the {what} nests deeper than {max_depth} levels")
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except (ValueError, RecursionError, OverflowError, TypeError):
        raise _malformed(f"the {what} is not valid JSON") from None


def parse_compact(token: str) -> CompactJWS:
    """Split and decode a compact JWS; verifies nothing cryptographic."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected("too_large", f"the bearer token is longer than {MAX_TOKEN_BYTES} bytes")
    if not token.isascii():
        raise _malformed("it contains non-ASCII characters")
    parts = token.split(".")
    if len(parts) == 5:
        raise TokenRejected("jwe_refused", "encrypted tokens (JWE) are not accepted; send a signed JWT")
    if len(parts) != 3:
        raise _malformed(f"expected 3 dot-separated segments, got {len(parts)}")
    header_b64, payload_b64, signature_b64 = parts
    if not header_b64 or not payload_b64 or not signature_b64:
        raise _malformed("a segment is empty (unsigned or detached-payload tokens are refused)")
    header = loads_strict(b64url_decode_strict(header_b64, "header"), "header")
    if not isinstance(header, dict):
        raise _malformed("the header is not a JSON object")
    payload = loads_strict(b64url_decode_strict(payload_b64, "payload"), "payload")
    if not isinstance(payload, dict):
        raise _malformed("the payload is not a JSON object")
    signature = b64url_decode_strict(signature_b64, "signature")
    return CompactJWS(
        header=header,
        payload=payload,
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        signature=signature,
    )
