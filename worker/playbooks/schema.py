"""The playbook JSON Schema, generated from the models, with each action's `with:` model per action."""

from __future__ import annotations

from typing import Any

from worker.actions.base import Action
from worker.actions.registry import load_all
from worker.playbooks.model import Playbook


def playbook_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a playbook file, for editors (yaml-language-server) and CI."""
    load_all()
    schema = Playbook.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    branches = []
    for name, action in sorted(Action.registry.items()):
        params = action.params.model_json_schema()
        defs.update(params.pop("$defs", {}))
        params_name = f"with:{name}"
        defs[params_name] = params
        branches.append(
            {
                "if": {"properties": {"action": {"const": name}}, "required": ["action"]},
                "then": {"properties": {"with": {"$ref": f"#/$defs/{params_name}"}}},
            }
        )
    step = defs["Step"]
    step["properties"]["action"] = {"enum": sorted(Action.registry), "description": "The step type."}
    step["allOf"] = branches
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "incident-worker playbook"
    return schema
