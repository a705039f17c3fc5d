"""Crash safety (a mutation is never applied twice) and two executors on one database."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from harness import ROLLBACK, SCALE, Harness, pd_event
from sqlalchemy import update

from worker.engine import executor as executor_module
from worker.engine.executor import Executor
from worker.errors import TransientError
from worker.store.tables import Run


class Died(BaseException):
    """Stands for kill -9: nothing after it runs, no transaction commits."""


def test_a_crash_after_the_call_does_not_repeat_the_mutation(database_url: str, tmp_path: Path) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"rollback": ROLLBACK})
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        h.decide(h.links()["Dana Okafor"])
        real_undo = h.cluster.rollout_undo

        def undo_then_die(**kwargs):  # type: ignore[no-untyped-def]
            real_undo(**kwargs)
            raise Died

        h.cluster.rollout_undo = undo_then_die  # type: ignore[method-assign]
        with pytest.raises(Died):
            h.run()
        assert h.steps() == {"rollback": "running"}  # the intent was committed before the call
        assert h.cluster.mutations == [("rollout_undo", 2)]

        # A new process (another holder) takes over once the dead one's claim expires.
        h.cluster.rollout_undo = real_undo  # type: ignore[method-assign]
        h.clock.advance(minutes=7)  # the dead process's claim covered its whole call budget
        other = h.executor("restarted")
        other.run_once()
        assert h.steps() == {"rollback": "succeeded"}
        assert h.cluster.mutations == [("rollout_undo", 2)]  # applied exactly once
        messages = [e["message"] for e in h.incident()["timeline"]]
        assert any("found already applied after a restart" in m for m in messages), "\n".join(messages)
    finally:
        h.close()


@pytest.mark.parametrize("book", [ROLLBACK, SCALE], ids=["rollback", "scale"])
def test_a_target_that_cannot_answer_after_a_crash_is_asked_again_not_changed_again(
    database_url: str, tmp_path: Path, book: str
) -> None:
    # kill -9 right after the call; the API server then answers 503 for a moment while the worker restarts.
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"book": book})
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        h.decide(h.links()["Dana Okafor"])
        method = "rollout_undo" if book is ROLLBACK else "scale"
        real_call, real_state = getattr(h.cluster, method), h.cluster.get_deployment_state

        def call_then_die(**kwargs):  # type: ignore[no-untyped-def]
            real_call(**kwargs)
            raise Died

        setattr(h.cluster, method, call_then_die)
        with pytest.raises(Died):
            h.run()
        setattr(h.cluster, method, real_call)
        outage = [TransientError("503 from the API server")]

        def state_after_the_outage(**kwargs):  # type: ignore[no-untyped-def]
            if outage:
                raise outage.pop()
            return real_state(**kwargs)

        h.cluster.get_deployment_state = state_after_the_outage  # type: ignore[method-assign]
        h.clock.advance(minutes=7)
        restarted = h.executor("restarted")
        restarted.run_once()
        assert h.steps() == {"scale" if book is SCALE else "rollback": "running"}  # undecided: asks again
        h.clock.advance(seconds=6)
        restarted.run_once()
        assert len(h.cluster.mutations) == 1  # applied exactly once
        assert set(h.steps().values()) == {"succeeded"}
        messages = [e["message"] for e in h.incident()["timeline"]]
        assert any("found already applied after a restart" in m for m in messages), "\n".join(messages)
    finally:
        h.close()


@pytest.mark.parametrize("down_for", [9, 30])  # minutes before the restart: the claim's time, a long outage
def test_a_target_that_never_answers_after_a_crash_fails_the_step_for_a_person(
    database_url: str, tmp_path: Path, down_for: int
) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"book": SCALE})
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        h.decide(h.links()["Dana Okafor"])
        real_scale = h.cluster.scale

        def scale_then_die(**kwargs):  # type: ignore[no-untyped-def]
            real_scale(**kwargs)
            raise Died

        h.cluster.scale = scale_then_die  # type: ignore[method-assign]
        with pytest.raises(Died):
            h.run()

        def down(**kwargs):  # type: ignore[no-untyped-def]
            raise TransientError("503 from the API server")

        h.cluster.get_deployment_state = down  # type: ignore[method-assign]
        restarted = h.executor("restarted")
        h.clock.advance(minutes=down_for)  # the dead process's claim has run out (the target is still down)
        for _ in range(3):  # asked again every few seconds for a while...
            restarted.run_once()
            assert h.steps() == {"scale": "running"}
            h.clock.advance(minutes=3)
        h.clock.advance(minutes=2)  # ...then it is a person's call
        restarted.run_once()
        assert h.steps() == {"scale": "failed"}
        assert h.cluster.mutations == [("scale", 6)]
        messages = [e["message"] for e in h.incident()["timeline"]]
        assert any("check the target by hand" in m for m in messages), messages
    finally:
        h.close()


def test_a_step_whose_repeat_is_unsafe_fails_instead_of_repeating(database_url: str, tmp_path: Path) -> None:
    post = """
name: create-ticket
match: {service: checkout}
steps:
  - id: ticket
    action: http.request
    with: {method: POST, url: "http://127.0.0.1:8091/flags/new-checkout-flow", json: {enabled: false}}
"""
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"ticket": post})
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        h.decide(h.links()["Dana Okafor"])

        class DyingHttp:
            def request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                raise Died

        h.runtime.clients.http = lambda hosts: DyingHttp()  # type: ignore[method-assign]
        with pytest.raises(Died):
            h.run()
        h.clock.advance(minutes=7)  # the dead process's claim covered its whole call budget
        h.executor("restarted").run_once()
        step = h.incident()["runs"][0]["steps"][0]
        assert step["status"] == "failed"
        assert "not safe to repeat" in step["error"]
    finally:
        h.close()


def test_two_executors_never_run_two_mutations_of_one_service_at_once(database_url: str, tmp_path: Path) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"rollback": ROLLBACK, "scale": SCALE})
    in_flight, peak, calls = [0], [0], []
    lock = threading.Lock()

    def slow(name, real):  # type: ignore[no-untyped-def]
        def call(**kwargs):  # type: ignore[no-untyped-def]
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
                calls.append(name)
            time.sleep(0.3)
            try:
                return real(**kwargs)
            finally:
                with lock:
                    in_flight[0] -= 1

        return call

    h.cluster.rollout_undo = slow("undo", h.cluster.rollout_undo)  # type: ignore[method-assign]
    h.cluster.scale = slow("scale", h.cluster.scale)  # type: ignore[method-assign]
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        runs = h.incident()["runs"]
        assert len(runs) == 2
        executors = [h.executor(f"proc-{i}") for i in range(2)]

        def spin(executor: Executor) -> None:
            for _ in range(10):
                executor.run_once()
                h.clock.advance(seconds=6)
                time.sleep(0.02)

        used: set[str] = set()
        for _ in range(3):
            # Approve every open gate; the second change is re-asked because the first one moved the
            # deployment (approve what you see), so this takes two rounds.
            h.runtime.notes.run_once()  # post the queued approval links
            for token in _all_tokens(h):
                if token not in used:
                    used.add(token)
                    h.decide(token)
            threads = [threading.Thread(target=spin, args=(e,)) for e in executors]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
        assert sorted(calls) == ["scale", "undo"]  # each ran exactly once
        assert peak[0] == 1  # never two changes to checkout in flight
        assert set(h.steps().values()) == {"succeeded"}
    finally:
        h.close()


def _all_tokens(h: Harness) -> list[str]:
    tokens = []
    for _, text in h.pagerduty.notes:
        found = re.findall(r"- Dana Okafor \(.+?\): \S+/approvals/(\S+)", text)
        tokens += found
    return tokens


def test_an_executor_whose_claim_was_taken_while_it_looked_leaves_the_run_alone(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"rollback": ROLLBACK})
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        h.decide(h.links()["Dana Okafor"])
        looked = executor_module.read_preview

        def slow_look(call):  # type: ignore[no-untyped-def]
            # The re-check before the change outlasts the claim; another executor takes the run over.
            with h.runtime.sessions.begin() as session:
                session.execute(update(Run).values(claimed_by="other-executor"))
            return looked(call)

        monkeypatch.setattr(executor_module, "read_preview", slow_look)
        h.runtime.executor.run_once()
        assert h.cluster.mutations == []  # the run is the other executor's now
        assert h.steps() == {"rollback": "approved"}
    finally:
        h.close()
