"""Every step type's EXAMPLE loads through the real loader, and its parameter model is in the schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONFIG

from worker.actions.base import Action, ActionParams
from worker.actions.registry import load_all
from worker.classify.config import load_catalog
from worker.playbooks.loader import lint_playbook_file
from worker.playbooks.schema import playbook_schema

ACTIONS = sorted(load_all())
CATALOG = load_catalog(CONFIG)


@pytest.mark.parametrize("name", ACTIONS)
def test_example_is_a_lint_clean_step(name: str, tmp_path: Path) -> None:
    action = Action.registry[name]
    assert action.EXAMPLE, f"{name} has no EXAMPLE"
    step = "\n".join("  " + line for line in action.EXAMPLE.splitlines())
    approval = "\n    approval: required" if action.mutating else ""
    path = tmp_path / "example.yaml"
    path.write_text(f"name: example\nmatch: {{service: checkout}}\nsteps:\n{step}{approval}\n")
    playbook, problems = lint_playbook_file(path, catalog=CATALOG)
    assert problems == [], [str(p) for p in problems]
    assert playbook is not None and playbook.steps[0].action == name


def test_the_schema_has_a_with_model_for_every_action() -> None:
    defs = playbook_schema()["$defs"]
    assert {f"with:{name}" for name in ACTIONS} <= set(defs)


def test_registering_a_name_twice_fails_loudly() -> None:
    class Params(ActionParams):
        pass

    with pytest.raises(TypeError, match="registered twice"):

        class Again(Action[Params], name="wait"):  # noqa: F811 - the point of the test
            """Duplicate."""
