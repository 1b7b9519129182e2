"""CPU of the gateway's cached token check, measured in-process: what the load test cannot resolve.

The load test compares whole processes on a shared 2-core VM, where single rounds swing by 10-20 %;
a check that costs microseconds disappears in that noise. This times the very code the gateway runs
for a cached token (``TokenAuthenticator.authenticate`` then ``PolicyAuthorizer.authorize_infer``,
built from the same settings as the benchmark gateways) over many calls.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path


def cached_check_us(key_dir: Path, calls: int = 20_000) -> float:
    """Microseconds of CPU per cached authenticate + authorize, as the gateway runs them."""
    from gateway.auth import build_auth
    from gateway.auth.authenticator import TokenAuthenticator
    from gateway.auth.dev_issuer import DevIssuer
    from gateway.config import AuthSettings, DevIssuerSettings

    async def run() -> float:
        dev = DevIssuerSettings(enabled=True, key_dir=str(key_dir))
        authenticator, authorizer = build_auth(AuthSettings(enabled=True, dev_issuer=dev))
        assert isinstance(authenticator, TokenAuthenticator)  # auth is enabled: the real one
        header = f"Bearer {DevIssuer(dev).mint('bench-cost', lifetime_s=3600)}"
        try:
            await authenticator.authenticate(header)  # the one full validation; the rest hit the cache
            started = time.process_time()
            for _ in range(calls):
                principal = await authenticator.authenticate(header)
                authorizer.authorize_infer(principal, "identity_fp32")
            return (time.process_time() - started) / calls * 1e6
        finally:
            await authenticator.aclose()

    return asyncio.run(run())
