"""A status page template that loads renders on the page: the config is checked against the very variables
engine.comms renders it with (domain.catalog.statuspage_context)."""

from __future__ import annotations

from pathlib import Path

from conftest import CONFIG
from harness import Harness, pd_event

EVERY = "{{ incident.title }}|{{ incident.service }}|{{ incident.severity }}|{{ incident.status }}|"
EVERY += "{{ service_name }}|{{ next_update }}"


def test_a_template_using_every_variable_it_was_checked_against_renders_on_the_page(
    sqlite_url: str, tmp_path: Path
) -> None:
    text = (CONFIG / "communications.yaml").read_text()
    old = 'incident_name: "{{ service_name }} degraded"'
    assert old in text
    h = Harness(
        database_url=sqlite_url,
        tmp_path=tmp_path,
        config_patch={"communications.yaml": text.replace(old, f'incident_name: "{EVERY}"')},
    )
    try:
        h.deliver(pd_event("incident.triggered", priority="P1"))
        h.run()
        (call,) = h.statuspage.calls
        title, service, severity, status, name, next_update = call[1]["name"].split("|")
        assert (title, service, severity, status, name) == (
            "checkout error rate above 5%",
            "checkout",
            "SEV1",
            "triggered",
            "Checkout",
        )
        assert next_update.endswith(" UTC")
    finally:
        h.close()
