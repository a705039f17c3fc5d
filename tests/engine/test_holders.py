"""Holder ids and the one case a claim may be taken over before it expires: its process is certainly gone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from worker.store import leases
from worker.store.db import session_factory
from worker.store.holders import holder_id, is_gone

NOW = datetime(2026, 11, 24, 2, 47, tzinfo=UTC)


def holder_of(pid: int) -> str:
    host, _, rand, namespace = holder_id().split(":")
    return f"{host}:{pid}:{rand}:{namespace}"


@pytest.fixture
def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def running_pid() -> Iterator[int]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()


def test_a_holder_id_names_host_pid_a_random_part_and_the_namespace() -> None:
    host, pid, rand, namespace = holder_id().split(":")
    assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    assert len(rand) == 8 and rand != holder_id().split(":")[2]
    assert namespace  # /proc is there on Linux


def test_an_exited_process_of_this_host_is_gone(exited_pid: int) -> None:
    assert is_gone(holder_of(exited_pid))


def test_a_killed_but_unreaped_process_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while not Path(f"/proc/{child.pid}/stat").read_text().split(")")[1].strip().startswith("Z"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert is_gone(holder_of(child.pid))  # a zombie never runs again
    finally:
        child.wait()


def test_a_running_process_is_not_gone(running_pid: int) -> None:
    assert not is_gone(holder_of(running_pid))


@pytest.mark.parametrize(
    "holder",
    [
        None,
        "",
        "step:12",  # mutation leases are held by steps, not processes
        "some-host:1:abcd1234",  # the format before namespaces: never provably gone
        "other-host:{pid}:abcd1234:{namespace}",
        "{host}:{pid}:abcd1234:otherboot.4026531836",
        "{host}:{pid}:abcd1234:",
        "{host}:not-a-pid:abcd1234:{namespace}",
        "{host}:{own}:abcd1234:{namespace}",
    ],
)
def test_anything_not_provably_gone_counts_as_alive(holder: str | None, exited_pid: int) -> None:
    host, _, _, namespace = holder_id().split(":")
    if holder:
        holder = holder.format(host=host, pid=exited_pid, namespace=namespace, own=os.getpid())
    assert not is_gone(holder)


def test_a_lease_of_a_gone_holder_is_taken_over_before_it_expires(
    engine: Engine, exited_pid: int, running_pid: int
) -> None:
    sessions = session_factory(engine)
    hour = timedelta(hours=1)
    with sessions.begin() as session:
        assert leases.acquire(session, name="alive", holder=holder_of(running_pid), now=NOW, ttl=hour)
        assert leases.acquire(session, name="dead", holder=holder_of(exited_pid), now=NOW, ttl=hour)
    me = holder_id()
    with sessions.begin() as session:
        assert not leases.acquire(session, name="alive", holder=me, now=NOW, ttl=hour)
        assert leases.acquire(session, name="dead", holder=me, now=NOW, ttl=hour)
    with sessions.begin() as session:
        assert leases.acquire(session, name="dead", holder=me, now=NOW, ttl=hour)  # it is ours now
        assert not leases.acquire(session, name="dead", holder=holder_id(), now=NOW, ttl=hour)  # and alive
