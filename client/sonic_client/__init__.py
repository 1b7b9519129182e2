"""sonic_client: the thin client that reconstruction jobs use to reach the SONIC gateway.

Numpy arrays in, numpy arrays out, over the standard Triton/KServe v2 protocol (gRPC by default,
HTTP optional), with a WLCG bearer token and provenance headers on every request::

    from sonic_client import Client

    with Client("gateway.example.org:8001", dataset="protodune-sp-run5387") as client:
        out = client.infer("emtrack_michel", {"main_input": patches}, batch_size=1693)
        scores = out["em_trk_none_netout"]

The synthetic ProtoDUNE-like event generator and patch builder live in
:mod:`sonic_client.protodune`. The base install needs only numpy and ``tritonclient[grpc]``; HTTP
urls need the ``http`` extra (httpx) and :class:`OAuth2TokenProvider` the ``oidc`` extra
(authlib), imported only when used.
"""

from __future__ import annotations

from ._client import DEFAULT_URL, AsyncClient, Client, Compression, InferResult, InferStats
from ._errors import (
    InferenceError,
    MissingDependencyError,
    SonicClientError,
    TokenExpiredError,
    TokenNotFoundError,
    TokenRefreshError,
)
from ._provenance import Provenance
from ._retry import RETRYABLE_CODES, RetryPolicy
from ._tokens import (
    DiscoveredToken,
    FileToken,
    OAuth2TokenProvider,
    StaticToken,
    TokenProvider,
    discover_token,
    token_expiry,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "RETRYABLE_CODES",
    "AsyncClient",
    "Client",
    "Compression",
    "DiscoveredToken",
    "FileToken",
    "InferResult",
    "InferStats",
    "InferenceError",
    "MissingDependencyError",
    "OAuth2TokenProvider",
    "Provenance",
    "RetryPolicy",
    "SonicClientError",
    "StaticToken",
    "TokenExpiredError",
    "TokenNotFoundError",
    "TokenProvider",
    "TokenRefreshError",
    "__version__",
    "discover_token",
    "token_expiry",
]
