"""`intake` (what a webhook waits for) rejects exactly what `parse` (what processing runs) rejects.

A source may validate more cheaply at intake than by building its AlertEvents, but if the two ever
disagreed, a webhook would be answered 202 and then fail in processing (or be refused although
processing would have taken it). Every sample body, and every one-field mutation of it, must get the
same verdict, the same 400 reason and the same de-duplication key from both.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import WEBHOOKS

from worker.errors import WebhookRejected
from worker.settings import Settings
from worker.sources.registry import build_sources

SOURCES = build_sources(Settings.from_env({}))
NOW = datetime(2026, 11, 24, 2, 47, tzinfo=UTC)
REPLACEMENTS: tuple[Any, ...] = (None, 7, -1, 10**30, "", "x", "2026-13-45", [], {}, True, 1.5)
SAMPLES = sorted(p for p in WEBHOOKS.glob("*/*.json") if p.name != "headers.json")


def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if at:
        yield at
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:2]):  # the first two items of a list stand for the rest
            yield from _paths(item, (*at, index))


def _mutations(document: Any) -> Iterator[tuple[str, Any]]:
    for path in _paths(document):
        for replacement in (*REPLACEMENTS, _DELETE):
            mutated = copy.deepcopy(document)
            parent = mutated
            for step in path[:-1]:
                parent = parent[step]
            if replacement is _DELETE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = replacement
            yield f"{'.'.join(map(str, path))}={'<deleted>' if replacement is _DELETE else replacement!r}", mutated


_DELETE = object()


def _verdict(call: Any) -> tuple[str, Any]:
    try:
        return "accepted", call()
    except WebhookRejected as exc:
        return "rejected", (exc.status, exc.reason, exc.field)


def _agree(source: str, body: bytes, headers: dict[str, str]) -> tuple[str, Any]:
    by_intake = _verdict(lambda: SOURCES[source].intake(body, headers))
    by_parse = _verdict(lambda: SOURCES[source].parse(body, headers, received_at=NOW).dedup_key)
    assert by_intake == by_parse
    return by_intake


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_intake_and_parse_agree_on_every_sample_and_mutation(sample: Any) -> None:
    source = sample.parent.name
    document = json.loads(sample.read_bytes())
    headers = {"X-Webhook-Id": "wh-1"} if source == "pagerduty" else {}
    assert _agree(source, sample.read_bytes(), headers)[0] == "accepted"
    verdicts = {"accepted": 0, "rejected": 0}
    for label, mutated in _mutations(document):
        try:
            verdict, _ = _agree(source, json.dumps(mutated).encode(), headers)
        except AssertionError as exc:
            raise AssertionError(f"{sample.name}: {label}: {exc}") from None
        verdicts[verdict] += 1
    # The mutations reach both outcomes, so the agreement above is about something.
    assert verdicts["accepted"] > 0 and verdicts["rejected"] > 0, verdicts


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b"null", b'{"event": 1}', '{"event": "\u00e9"}'.encode("latin-1"), b'{"a": 1e999}'],
)
@pytest.mark.parametrize("source", ["pagerduty", "opsgenie", "alertmanager"])
def test_intake_and_parse_agree_on_broken_bodies(source: str, body: bytes) -> None:
    assert _agree(source, body, {})[0] == "rejected"


def test_pagerduty_dedup_key_prefers_the_webhook_id_and_falls_back_to_the_event_id() -> None:
    body = (WEBHOOKS / "pagerduty" / "incident.triggered.json").read_bytes()
    event_id = json.loads(body)["event"]["id"]
    assert _agree("pagerduty", body, {"X-Webhook-Id": "wh-9"}) == ("accepted", "wh-9")
    assert _agree("pagerduty", body, {}) == ("accepted", event_id)


def test_pagerduty_one_pass_check_answers_as_the_general_check_wherever_it_answers() -> None:
    """Incident events are checked in one pass; any body it takes must give the same AlertEvent (and key)
    as the general two-step check, which remains the judge of everything else."""
    pagerduty = SOURCES["pagerduty"]
    taken = 0
    for sample in (p for p in SAMPLES if p.parent.name == "pagerduty"):
        document = json.loads(sample.read_bytes())
        for label, mutated in [("as sent", document), *_mutations(document)]:
            body = json.dumps(mutated).encode()
            fast = pagerduty._check_incident(body, {})
            if fast is None:
                continue
            taken += 1
            try:
                general = pagerduty._check_any(body, {})
            except WebhookRejected as exc:
                problem = f"{sample.name}: {label}: one pass took what the general check refuses: {exc}"
                raise AssertionError(problem) from None
            assert fast.dedup_key == general.dedup_key, f"{sample.name}: {label}"
            assert pagerduty._event(fast) == pagerduty._event(general), f"{sample.name}: {label}"
    assert taken > 100, taken  # the one pass is the common path, not a branch the samples never reach
