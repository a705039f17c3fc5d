"""Names of request headers that carry credentials: never stored, never logged, never shown."""

from __future__ import annotations

CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-worker-token", "x-api-key", "api-key", "x-auth-token"}
)
