"""A time limit on a whole exchange over httpx, whose own timeouts bound each network operation alone.

httpx's connect, read and write timeouts apply to every operation separately, so a server that trickles
its answer a byte at a time keeps a request going for as long as it likes. Within `time_limit(seconds)`,
every operation of a connection from `TimeLimitedTransport` is also bounded by what is left of the limit,
and once nothing is left the next one fails as httpx's own timeouts do (`httpx.TimeoutException`). The
limit is a context variable, so it covers every request made inside it, from the thread that set it.
The host name's lookup (getaddrinfo) is not covered: it takes no timeout, and the system's resolver bounds it.

Why: a call made holding a lease or a claim that another replica takes over once it lapses (a status
page update, engine/comms.py; a step's call, engine/executor.py, within the step's timeout) must end
before it lapses, or the other replica would make the same call while this one is still in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

_DEADLINE: ContextVar[float | None] = ContextVar("worker_http_deadline", default=None)


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Bound every network operation made inside, through a TimeLimitedTransport, to `seconds` from now."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    """The operation's timeout, shortened to what is left of the limit; `expired` once nothing is."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the exchange's time limit ran out")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        return _Stream(self._stream.start_tls(ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        connected = self._backend.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _Stream(connected)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._backend.connect_unix_socket(path, _left(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class TimeLimitedTransport(httpx.HTTPTransport):
    """httpx's own transport, with connections that honour `time_limit`, direct or through an HTTP(S) proxy."""

    def __init__(self, *, verify: Any = True, limits: httpx.Limits | None = None, proxy: str | None = None) -> None:
        limits = limits or httpx.Limits()
        super().__init__(verify=verify, limits=limits)
        self.proxy = proxy
        # httpx builds its pool without a way to pass a network backend; the same pool is built again
        # with one (httpcore's public constructors: only the attribute holding it is httpx's own).
        ssl_context = httpx.create_ssl_context(verify=verify)
        sizes = {
            "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry,
        }
        if proxy is None:
            self._pool = httpcore.ConnectionPool(ssl_context=ssl_context, network_backend=_Backend(), **sizes)
            return
        through = httpx.Proxy(proxy)
        if through.url.scheme not in ("http", "https"):
            raise ValueError(f"proxy {through.url.scheme}:// is not supported here (only http:// and https://)")
        self._pool = httpcore.HTTPProxy(
            proxy_url=httpcore.URL(
                scheme=through.url.raw_scheme,
                host=through.url.raw_host,
                port=through.url.port,
                target=through.url.raw_path,
            ),
            proxy_auth=through.raw_auth,
            proxy_headers=through.headers.raw,
            ssl_context=ssl_context,
            proxy_ssl_context=through.ssl_context,
            network_backend=_Backend(),
            **sizes,
        )


@dataclass(frozen=True)
class Routes:
    """Transports that honour `time_limit`, routed as httpx routes requests by the environment's proxies."""

    transport: httpx.BaseTransport
    mounts: dict[str, httpx.BaseTransport | None]


_ROUTES: dict[tuple[tuple[str, str | None], ...], Routes] = {}
_ROUTES_LOCK = threading.Lock()


def environment_routes() -> Routes:
    """For `httpx.Client(transport=…, mounts=…)`: a TimeLimitedTransport for direct requests and one per
    proxy that HTTP(S)_PROXY / ALL_PROXY name, mounted by httpx's own reading of them and of NO_PROXY, so
    every request (each hop of a redirect too) goes where a plain httpx client would send it. Shared by
    every client (one pool, one TLS context per route, built once): a client using them must not close
    them."""
    # httpx's own parser of the environment (also what a client without a transport of its own uses).
    proxies = httpx._utils.get_environment_proxies()  # noqa: SLF001 - the routing httpx itself applies
    key = tuple(sorted(proxies.items()))
    with _ROUTES_LOCK:
        if key not in _ROUTES:
            mounts = {pattern: TimeLimitedTransport(proxy=url) if url else None for pattern, url in proxies.items()}
            _ROUTES[key] = Routes(TimeLimitedTransport(), mounts)
        return _ROUTES[key]
