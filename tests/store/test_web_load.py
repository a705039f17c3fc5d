"""The web process's published load, and the background process resting only while it is high (SQLite)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from worker.store.web_load import FRESH, LoadPublisher, web_load


class Ticks:
    """A settable clock for one of the publisher's time sources."""

    def __init__(self, value: float = 0.0):
        self.value = value

    def __call__(self) -> float:
        return self.value


def publisher(directory: Path) -> tuple[LoadPublisher, Ticks, Ticks]:
    cpu, clock = Ticks(), Ticks(100.0)
    return LoadPublisher(directory, cpu=cpu, monotonic=clock), cpu, clock


def test_the_load_is_cpu_time_over_wall_time_since_the_last_publication(tmp_path: Path) -> None:
    pub, cpu, clock = publisher(tmp_path)
    pub.start()
    try:
        clock.value += 0.5
        cpu.value += 0.45  # 90 % of a core
        assert pub.publish() == pytest.approx(0.9)
        assert web_load(tmp_path) == pytest.approx(0.9)
        clock.value += 0.25  # idle since
        assert pub.publish() == 0.0
        assert web_load(tmp_path) == 0.0
    finally:
        pub.stop()


def test_a_real_process_burning_cpu_publishes_a_high_load_and_an_idle_one_a_low_one(tmp_path: Path) -> None:
    pub = LoadPublisher(tmp_path, interval=0.05)
    pub.start()
    try:
        time.sleep(0.3)
        idle = web_load(tmp_path)
        done = time.monotonic() + 0.6
        while time.monotonic() < done:  # one core's worth of work
            sum(range(1000))
        busy = web_load(tmp_path)
    finally:
        pub.stop()
    assert idle < 0.3 < 0.6 < busy, (idle, busy)
    assert not pub.path.exists()  # stopping removes it


def test_the_busiest_fresh_publication_counts_and_stale_torn_or_foreign_files_do_not(tmp_path: Path) -> None:
    now = time.time()
    (tmp_path / "11.load").write_text(f"{now - 0.5:.3f} 0.400")
    (tmp_path / "12.load").write_text(f"{now - 0.1:.3f} 0.700")
    (tmp_path / "13.load").write_text(f"{now - FRESH - 1:.3f} 0.990")  # its process stopped publishing
    (tmp_path / "14.load").write_text("17650")  # torn
    (tmp_path / "15.load").write_bytes(b"\x00" * 40)
    (tmp_path / "16-1.log").write_text(f"{now:.3f} 0.950")  # a journal, not a publication
    assert web_load(tmp_path, now=now) == pytest.approx(0.7)
    assert web_load(tmp_path / "missing") == 0.0


def test_a_new_publisher_deletes_publications_dead_for_ten_minutes(tmp_path: Path) -> None:
    dead, recent = tmp_path / "21.load", tmp_path / "22.load"
    for path in (dead, recent):
        path.write_text(f"{time.time():.3f} 0.5")
    os.utime(dead, (time.time() - 601, time.time() - 601))
    pub = LoadPublisher(tmp_path)
    pub.start()
    pub.stop()
    assert not dead.exists() and recent.exists()


def test_a_publisher_that_cannot_write_keeps_running(tmp_path: Path) -> None:
    pub = LoadPublisher(tmp_path, interval=0.02)
    pub.start()
    try:
        os.close(pub._fd)  # writes now fail with EBADF, as on a broken disk
        time.sleep(0.1)
        assert pub._thread is not None and pub._thread.is_alive()
    finally:
        pub._fd = -1
        pub.stop()


def test_a_publisher_that_cannot_make_its_file_says_so_and_the_web_process_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the journal's folder should be")
    pub = LoadPublisher(blocked)
    pub.start()  # does not raise: a gunicorn worker whose load() raised would not boot
    pub.stop()
    assert "cannot publish the web process's load" in caplog.text
    assert web_load(blocked) == 0.0


def test_a_publication_from_the_future_is_not_fresh(tmp_path: Path) -> None:
    # The wall clock was set back (NTP) after a web process died: its last time is ahead of now.
    now = time.time()
    (tmp_path / "31.load").write_text(f"{now + 3600:.3f} 0.950")
    assert web_load(tmp_path, now=now) == 0.0
