"""A secret rendered into a step is masked however a template wrote it: raw, or escaped by a filter."""

from __future__ import annotations

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from worker.playbooks.templating import MASK, mask

SECRET = "ab+cd/ef=='\"<x>é"  # a base64-ish token with quotes, markup and an accented letter


@pytest.mark.parametrize(
    "template",
    ["{{ s }}", "{{ s|urlencode }}", "{{ s|e }}", "{{ s|tojson }}", "{{ s|urlencode|e }}", "{{ {'k': s}|tojson }}"],
)
def test_every_form_a_template_can_give_a_secret_is_masked(template: str) -> None:
    written = ImmutableSandboxedEnvironment().from_string("token=" + template).render(s=SECRET)
    masked = mask({"url": written, "list": [written]}, {"S": SECRET})
    assert MASK in masked["url"] and "ab" not in masked["url"] and "ab" not in masked["list"][0], masked


def test_text_without_the_secret_is_left_as_it_is() -> None:
    assert mask("PATCH https://flags.example/checkout", {"S": SECRET}) == "PATCH https://flags.example/checkout"
