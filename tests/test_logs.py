"""Log lines for operators: text or JSON at WORKER_LOG_LEVEL, libraries' request logs kept out."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CONFIG

from worker import logs
from worker.http.server import CLIENT_PAUSE
from worker.testing.live import LiveWorker


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in ("httpx", "httpx2", "urllib3")})
    yield
    root.handlers[:], level, chatty = saved
    root.setLevel(level)
    for name, old in chatty.items():
        logging.getLogger(name).setLevel(old)


def test_json_lines_carry_level_logger_message_and_exception(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.configure(level="INFO", fmt="json", stream=stream)
    logging.getLogger("worker.test").debug("not at INFO")
    logging.getLogger("worker.test").info("delivery %s processed", 42)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("worker.test").exception("processing failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["level"], e["logger"], e["message"]) for e in lines] == [
        ("info", "worker.test", "delivery 42 processed"),
        ("error", "worker.test", "processing failed"),
    ]
    assert "RuntimeError: boom" in lines[1]["exception"] and lines[0]["at"].endswith("+00:00")


def test_text_lines_and_libraries_request_logs_stay_out_even_at_debug(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.configure(level="DEBUG", fmt="text", stream=stream)
    logging.getLogger("httpx").info("HTTP Request: GET https://flags/?token=s3cret")
    logging.getLogger("httpx2").info("HTTP Request: POST https://api.pagerduty.com/?token=s3cret")  # pagerduty
    logging.getLogger("worker.test").debug("looking")
    text = stream.getvalue()
    assert "s3cret" not in text
    assert " DEBUG worker.test [" in text and text.rstrip().endswith("looking")


def test_serve_logs_json_when_asked(tmp_path: Path) -> None:
    env = {
        "WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
        "WORKER_LOG_FORMAT": "json",
        "WORKER_LOG_LEVEL": "info",
    }
    with LiveWorker(env=env, cwd=tmp_path, config_dir=CONFIG) as live:
        deadline = time.monotonic() + 10
        while not (started := _started(live)) and time.monotonic() < deadline:
            time.sleep(0.1)
        # gunicorn's own lines come in the same format: a client that stalls in its request's head.
        host, port = live.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as stalled:
            stalled.sendall(b"POST /webhooks/pagerduty HTTP/1.1\r\nHo")
            stalled.settimeout(CLIENT_PAUSE + 5)
            assert stalled.recv(100) == b""  # dropped
        time.sleep(0.5)
    assert started, live.log.read_text()
    nice = max(os.getpriority(os.PRIO_PROCESS, 0), 10)  # the default, unless the tests already run nicer
    assert started["logger"] == "worker.http.server" and f"at nice {nice}" in str(started["message"])
    lines = live.log.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line, the start banner included, is one JSON object
    assert any(e["message"].startswith("incident-worker starting on http://") for e in entries)
    assert any(e["logger"] == "gunicorn.error" and "dropped a client" in e["message"] for e in entries), lines


def _started(live: LiveWorker) -> dict[str, object] | None:
    """The background process's start line, once it is in the worker's log (JSON lines only)."""
    entries = [json.loads(line) for line in live.log.read_text().splitlines() if line.startswith('{"at"')]
    return next((e for e in entries if "background processing started" in str(e["message"])), None)


def test_a_missing_playbook_directory_is_said_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from worker.engine.runtime import Runtime  # noqa: PLC0415
    from worker.settings import Settings  # noqa: PLC0415

    settings = Settings.from_env(
        {}, database_url=f"sqlite:///{tmp_path / 'w.db'}", config_dir=CONFIG, playbooks_dir=tmp_path / "nowhere"
    )
    with caplog.at_level(logging.WARNING, logger="worker.engine.runtime"):
        Runtime.build(settings).close()  # starts: classifying and communicating need no playbook
    assert f"no playbook directory at {tmp_path / 'nowhere'}" in caplog.text
