"""A background loop that keeps failing (the database is down) backs off and says so now and then; it
neither spins nor floods the log, and it says when it works again."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from worker.engine.processor import BackgroundLoop


def test_a_failing_loop_backs_off_despite_wake_ups_and_logs_a_line_now_and_then(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[float] = []
    healthy = threading.Event()

    def step() -> None:
        calls.append(time.monotonic())
        if not healthy.is_set():
            raise ConnectionError("database unreachable")

    loop = BackgroundLoop("probe", step, interval=0.01)
    caplog.set_level(logging.INFO, logger="worker.engine.processor")
    loop.start()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # other loops wake it all the time
            loop.wake()
            time.sleep(0.001)
        failing = len(calls)
        assert 3 <= failing <= 10  # 0.02, 0.04, 0.08... s apart: not thousands of attempts
        messages = [r.getMessage() for r in caplog.records]
        assert sum("failed" in m for m in messages) == 1  # one traceback...
        assert 1 <= sum("still failing" in m for m in messages) <= 4  # ...then a line at 2, 4, 8 failures
        healthy.set()
        deadline = time.monotonic() + 10
        while not any("works again" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            loop.wake()
            time.sleep(0.01)
        assert any("works again after" in r.getMessage() for r in caplog.records)
    finally:
        loop.stop()
