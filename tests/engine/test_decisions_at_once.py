"""Two decisions on one step at the same moment (two approvers, or one link clicked twice) are decided one
after the other, each seeing the other: on PostgreSQL both transactions run at once, so a decision that
read the step before the other committed would count without it (no quorum, or a link used twice)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import ROLLBACK, Harness, pd_event
from sqlalchemy import select

from worker.engine import approvals
from worker.http.app import create_app
from worker.store.tables import TimelineEntry


@pytest.fixture
def h(database_url: str, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"rollback": ROLLBACK})
    yield harness
    harness.close()


def opened(h: Harness, token: str) -> tuple[Any, dict[str, str]]:
    """A browser of its own (its own CSRF cookie) with the approval page open: the client and the form."""
    client = create_app(h.runtime).test_client()
    html = client.get(f"/approvals/{token}").get_data(as_text=True)
    fields = dict(re.findall(r'name="(csrf|plan_hash)" value="([^"]+)"', html))
    assert set(fields) == {"csrf", "plan_hash"}, html
    return client, {**fields, "decision": "approve", "confirm": "yes"}


def at_once(monkeypatch: pytest.MonkeyPatch, first: tuple[Any, str, dict], second: tuple[Any, str, dict]) -> list[int]:
    """POST `first`, hold it after its decision is written but before it commits, POST `second` meanwhile
    (give it time to run or to queue), then let `first` commit. Returns both status codes."""
    real, written, go = approvals.decide, threading.Event(), threading.Event()

    def decide_then_hold(session, **kwargs):  # type: ignore[no-untyped-def]
        status = real(session, **kwargs)
        if threading.current_thread().name == "first":
            session.flush()  # its writes are in the database, not yet committed
            written.set()
            go.wait(10)
        return status

    monkeypatch.setattr(approvals, "decide", decide_then_hold)
    codes: dict[str, int] = {}

    def post(name: str, request: tuple[Any, str, dict]) -> None:
        client, token, form = request
        codes[name] = client.post(f"/approvals/{token}", data=form).status_code

    threads = [threading.Thread(target=post, args=(name, req), name=name) for name, req in (("first", first),)]
    threads[0].start()
    assert written.wait(10)
    threads.append(threading.Thread(target=post, args=("second", second), name="second"))
    threads[1].start()
    threads[1].join(0.5)  # it either finishes now (reading the step without the first decision) or waits
    go.set()
    for thread in threads:
        thread.join(20)
    return [codes["first"], codes["second"]]


def test_two_approvers_at_once_both_count_towards_the_quorum(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.deliver(pd_event("incident.triggered", priority="P1"))  # SEV1: two approvers
    h.run()
    links = h.links()
    dana, sam = opened(h, links["Dana Okafor"]), opened(h, links["Sam Reyes"])
    codes = at_once(monkeypatch, (dana[0], links["Dana Okafor"], dana[1]), (sam[0], links["Sam Reyes"], sam[1]))
    assert codes == [200, 200]
    assert h.steps() == {"rollback": "approved"}  # each decision saw the other: the quorum is met
    h.run()
    assert h.cluster.mutations == [("rollout_undo", 2)]


def test_one_link_posted_twice_at_once_decides_once(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.deliver(pd_event("incident.triggered"))
    h.run()
    token = h.links()["Dana Okafor"]
    tab, other_tab = opened(h, token), opened(h, token)
    codes = at_once(monkeypatch, (tab[0], token, tab[1]), (other_tab[0], token, other_tab[1]))
    assert codes == [200, 409]  # single use, even when both clicks arrive together
    with h.runtime.sessions() as session:
        decisions = session.scalars(
            select(TimelineEntry.message).where(TimelineEntry.message.like("Dana Okafor approved%"))
        ).all()
    assert len(decisions) == 1
    h.run()
    assert h.cluster.mutations == [("rollout_undo", 2)]
