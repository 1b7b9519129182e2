"""Provenance tags arrive as the client encoded them (gRPC metadata is ASCII) and are stored as written."""

from __future__ import annotations

import pytest
from sonic_client._provenance import Provenance

from gateway.core.recording import decode_tag


@pytest.mark.parametrize(
    "name",
    [
        "protodune-sp:np04_reco_run5387",
        "dune:Läufe_2025/µ-Zerfall",
        "icarus:運転_5",
        "sbnd:run 7 (ß)",
    ],
)
def test_what_the_client_sends_decodes_to_what_it_was_given(name: str) -> None:
    sent = Provenance(dataset=name).headers()["sonic-dataset"]
    assert sent.isascii()
    assert decode_tag(sent) == name


@pytest.mark.parametrize(
    "raw",
    [
        "run%41",  # printable ASCII is never encoded by the client: '%' is literal
        "100%",
        "a%2",
        "%FF%FE",  # not UTF-8
        "%C3%A9%00",  # a NUL inside: not the client's encoding, kept as received
        "%E2%80%AE%0A",
    ],
)
def test_values_the_client_did_not_encode_stay_as_received(raw: str) -> None:
    assert decode_tag(raw) == raw


def test_absent_and_padded() -> None:
    assert decode_tag(None) is None
    assert decode_tag("  job-1 ") == "job-1"
