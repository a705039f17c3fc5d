"""The playbook JSON Schema, generated from the models, with each action's `with:` model per action.

Editors (yaml-language-server) check a playbook against it as it is typed, so it accepts every
playbook the loader accepts, and refuses as much of the rest as JSON Schema can say. It accepts, as
the loader does (it validates in pydantic's lax mode, after rendering templates):

- numbers and booleans written as strings ("8", "true"), as pydantic reads them;
- in a `with:` (of a step, its verify or its undo), a Jinja template (`{{ ... }}`, `{% ... %}`)
  wherever a string, number or boolean goes: it is rendered before the value is checked.

Left to the loader (`incident-worker lint`), because JSON Schema cannot say it:

- regular expressions that do not compile (`match.title`), template syntax and rendering errors, and
  what a template renders to;
- bounds of a number written as a string (`approvals: "9"`);
- the field validators of actions' parameters (check.http's `condition`, check.prometheus's `expect`);
- a duration whose parts are each within its bound but not their sum (`6d 2d` for at most 7d);
- a step id used twice (`uniqueItems` compares whole steps);
- what needs the service catalog (unknown services, targets the service does not own, `approval: none`
  for a mutating action the catalog does not auto-run) or the other files (a playbook name used twice).

Refused by the schema though the loader takes it, on purpose: true or false for a number (pydantic reads
them as 1 and 0): nobody means `replicas: true`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from worker.actions.base import Action
from worker.actions.registry import load_all
from worker.domain.catalog import MAX_LINK_TTL
from worker.domain.durations import duration_schema, format_duration
from worker.playbooks.model import Playbook

# The strings pydantic's lax mode turns into an int, a float, a bool (a superset for floats).
_INT_TEXT = {"type": "string", "pattern": r"^\s*[+-]?[0-9]+(_[0-9]+)*(\.0+)?\s*$"}
_FLOAT_TEXT = {
    "type": "string",
    "pattern": r"^\s*[+-]?([0-9_.]+([eE][+-]?[0-9]+)?|[iI][nN][fF]([iI][nN][iI][tT][yY])?|[nN][aA][nN])\s*$",
}
_BOOL_WORDS = "[tT]([rR][uU][eE])?|[fF]([aA][lL][sS][eE])?|[yY]([eE][sS])?|[nN][oO]?|[oO][nN]|[oO][fF][fF]|[01]"
_BOOL_TEXT = {"type": "string", "pattern": f"^({_BOOL_WORDS})$"}
_TEMPLATE = {"type": "string", "pattern": r"\{\{|\{%", "description": "A template, rendered before it is checked."}
_METADATA = ("title", "description", "default")


def playbook_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a playbook file, for editors (yaml-language-server) and CI."""
    load_all()
    schema = Playbook.model_json_schema(by_alias=True, schema_generator=_LaxSchema)
    defs = schema.setdefault("$defs", {})
    for name, action in sorted(Action.registry.items()):
        params = _templated(action.params.model_json_schema(by_alias=True, schema_generator=_LaxSchema))
        for model, params_def in params.pop("$defs", {}).items():
            if defs.setdefault(model, params_def) != params_def:  # one name, two schemas: a $ref would mix them
                raise RuntimeError(f"two models named {model} in the playbook schema")
        defs[f"with:{name}"] = params
    every = sorted(Action.registry)
    _calls(defs, defs["Step"], every, "The step type.")
    _calls(defs, defs["Check"], [n for n in every if Action.registry[n].check], "A read-only check action.")
    _calls(defs, defs["Compensation"], every, "The action that undoes the step.")
    schema["properties"]["approval_timeout"]["anyOf"] = [duration_schema(at_most=MAX_LINK_TTL), {"type": "null"}]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "incident-worker playbook"
    return schema


def _calls(defs: dict[str, Any], model: dict[str, Any], names: list[str], description: str) -> None:
    """`action:` one of `names`, and `with:` that action's parameters: required when some are (the loader
    checks a missing `with:` as an empty one)."""
    model["properties"]["action"] = {"enum": names, "description": description}
    branches = []
    for name in names:
        then: dict[str, Any] = {"properties": {"with": {"$ref": f"#/$defs/with:{name}"}}}
        if defs[f"with:{name}"].get("required"):
            then["required"] = ["with"]
        branches.append({"if": {"properties": {"action": {"const": name}}, "required": ["action"]}, "then": then})
    model["allOf"] = branches


class _LaxSchema(GenerateJsonSchema):
    """Pydantic's schemas for what its lax mode (the loader's) accepts, with defaults written as an
    operator writes them."""

    def int_schema(self, schema: core_schema.IntSchema) -> JsonSchemaValue:
        return {"anyOf": [super().int_schema(schema), _INT_TEXT]}

    def float_schema(self, schema: core_schema.FloatSchema) -> JsonSchemaValue:
        return {"anyOf": [super().float_schema(schema), _FLOAT_TEXT]}

    def bool_schema(self, schema: core_schema.BoolSchema) -> JsonSchemaValue:
        return {"anyOf": [super().bool_schema(schema), {"enum": [0, 1]}, _BOOL_TEXT]}

    def encode_default(self, dft: Any) -> Any:
        # Pydantic writes a timedelta as ISO 8601 (PT2M), which durations do not accept: an editor
        # completing a default would insert an error.
        return super().encode_default(_written(dft))


def _written(value: Any) -> Any:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, BaseModel):
        return _written(value.model_dump(by_alias=True))  # Python mode: durations stay timedeltas
    if isinstance(value, dict):
        return {key: _written(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_written(item) for item in value]
    return value


def _templated(node: Any) -> Any:
    """`node` (a schema) also taking a template wherever it takes a string (numbers and booleans take
    strings too, see _LaxSchema): a template may render to any string."""
    if isinstance(node, list):
        return [_templated(item) for item in node]
    if not isinstance(node, dict):
        return node  # `true`/`false` as a schema
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "$defs"):
            out[key] = {name: _templated(sub) for name, sub in value.items()}
        elif key in ("items", "prefixItems", "additionalProperties", "anyOf", "oneOf", "allOf"):
            out[key] = _templated(value)
        else:
            out[key] = value
    takes_string = (
        out.get("type") == "string"
        or any(isinstance(v, str) for v in out.get("enum", ()))
        or isinstance(out.get("const"), str)
    )
    if not takes_string:
        return out
    metadata = {key: out.pop(key) for key in _METADATA if key in out}  # where editors look for them
    return {**metadata, "anyOf": [out, _TEMPLATE]}
