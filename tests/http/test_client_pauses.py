"""A client that stalls mid-request: its read fails after CLIENT_PAUSE, and gunicorn's traceback for it
becomes one line (the live behaviour: test_webhooks_live.py)."""

from __future__ import annotations

import logging
import socket
import struct
import sys
from types import SimpleNamespace

from worker.http.server import CLIENT_PAUSE, _stalled_client_in_one_line, bound_client_pauses


def record_of(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:  # noqa: BLE001 - capturing it as gunicorn's log.exception would
        info = sys.exc_info()
    message = "Socket error processing request."
    return logging.LogRecord("gunicorn.error", logging.ERROR, "gthread.py", 1, message, (), info)


def test_every_accepted_connection_inherits_the_pause_limit() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        bound_client_pauses(SimpleNamespace(LISTENERS=[SimpleNamespace(sock=listener)]))
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                limit = struct.unpack("ll", accepted.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
        assert limit == (CLIENT_PAUSE, 0)
    finally:
        listener.close()
        logging.getLogger("gunicorn.error").removeFilter(_stalled_client_in_one_line)


def test_a_stalled_client_is_one_line_and_other_socket_errors_keep_their_traceback() -> None:
    stalled = record_of(BlockingIOError(11, "Resource temporarily unavailable"))
    assert _stalled_client_in_one_line(stalled)
    assert (stalled.levelname, stalled.exc_info) == ("INFO", None)
    assert stalled.getMessage() == f"dropped a client that paused {CLIENT_PAUSE} s or more while sending a request"
    other = record_of(OSError(24, "Too many open files"))
    assert _stalled_client_in_one_line(other)
    assert other.levelname == "ERROR" and other.exc_info is not None
