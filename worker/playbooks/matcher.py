"""Which playbooks apply to an incident, and why (shown by simulate and in the timeline)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from worker.playbooks.model import Playbook


@dataclass(frozen=True)
class MatchResult:
    matched: bool
    reasons: tuple[str, ...]


def match(playbook: Playbook, *, incident: dict[str, Any], alerts: list[dict[str, Any]]) -> MatchResult:
    """All conditions of `match:` must hold; the reasons say which held or which failed first."""
    rules = playbook.match
    reasons: list[str] = []
    if incident["service"] not in rules.service:
        return MatchResult(False, (f"service {incident['service']!r} is not in {rules.service}",))
    reasons.append(f"service {incident['service']!r}")
    if rules.severity is not None:
        if incident["severity"] not in [s.value for s in rules.severity]:
            return MatchResult(
                False, (f"severity {incident['severity']} is not in {[s.value for s in rules.severity]}",)
            )
        reasons.append(f"severity {incident['severity']}")
    if rules.source is not None:
        sources = {a["source"] for a in alerts}
        if not sources & set(rules.source):
            return MatchResult(False, (f"no alert from {rules.source}",))
        reasons.append(f"source {sorted(sources & set(rules.source))[0]}")
    if rules.title is not None:
        titles = [incident["title"], *(a["title"] for a in alerts)]
        hit = next((t for t in titles if re.search(rules.title, t or "")), None)
        if hit is None:
            return MatchResult(False, (f"no alert title matches /{rules.title}/",))
        reasons.append(f"title matches /{rules.title}/")
    if rules.labels is not None:
        if not any(all(a["labels"].get(k) == v for k, v in rules.labels.items()) for a in alerts):
            return MatchResult(False, (f"no alert has labels {rules.labels}",))
        reasons.append("labels " + ", ".join(f"{k}={v}" for k, v in rules.labels.items()))
    return MatchResult(True, tuple(reasons))
