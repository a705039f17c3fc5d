"""Serve a WSGI app on 127.0.0.1 in a background thread (for fakes in tests and the demo)."""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass  # fakes answer thousands of requests in tests; their access log is noise


class ThreadedServer:
    """`with ThreadedServer(app, port=0) as server: server.url`"""

    def __init__(self, app: Any, *, port: int = 0, ssl_context: Any = None):
        self._server = make_server(
            "127.0.0.1", port, app, threaded=True, ssl_context=ssl_context, request_handler=_QuietHandler
        )
        scheme = "https" if ssl_context is not None else "http"
        self.port = self._server.server_port
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        # A short poll interval: shutdown() waits for it, and tests stop hundreds of fakes.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> ThreadedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
