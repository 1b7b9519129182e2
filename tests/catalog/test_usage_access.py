"""Usage is not everyone's to read: a caller sees their own; admins and usage reader groups see all."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine

from gateway.catalog.recorder import write_usage
from gateway.core.recording import UsageEvent
from gateway.frontends.http.app import create_http_app
from tests.catalog.support import ADMIN, AUDITOR, AUDITORS, READER, make_gateway


def _event(subject: str, issuer: str = "https://issuer") -> UsageEvent:
    return UsageEvent(
        model="emtrack", version_requested="", version_served="1", facility="lab", backend_id="lab/h:1",
        subject=subject, issuer=issuer, job_id=f"job-of-{subject}", dataset="dune:run1", inferences=1,
    )  # fmt: skip


async def _subjects(http: httpx.AsyncClient, headers: dict[str, str], query: str = "") -> list[str]:
    r = await http.get(f"/api/v1/usage?sort=n_requests{query}", headers=headers)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["total"] == len(page["items"])
    return sorted(f"{u['subject']}@{u['issuer']}" for u in page["items"])


async def test_each_caller_reads_their_own_usage_admins_and_reader_groups_all(
    migrated_engine: Engine, db_url: str
) -> None:
    write_usage(
        migrated_engine,
        [_event("alice"), _event("bob"), _event("carol"), _event("alice", issuer="https://elsewhere")],
    )
    everyone = [
        "alice@https://elsewhere", "alice@https://issuer", "bob@https://issuer", "carol@https://issuer",
    ]  # fmt: skip
    for groups, auditor_sees in (([], ["carol@https://issuer"]), ([AUDITORS], everyone)):
        gw = make_gateway(db_url, auth={"usage_reader_groups": groups})
        await gw.catalog.start()
        try:
            transport = httpx.ASGITransport(app=create_http_app(gw))
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
                # alice of https://issuer: not the alice of another issuer, and no one else
                assert await _subjects(http, READER) == ["alice@https://issuer"]
                assert await _subjects(http, READER, "&subject=bob") == []
                assert await _subjects(http, ADMIN) == everyone
                assert await _subjects(http, AUDITOR) == auditor_sees
        finally:
            await gw.catalog.stop()
