"""The patch formats and selectors the fake Kubernetes API applies, as the API server does.

JSON Patch (RFC 6902), JSON Merge Patch (RFC 7386) and strategic merge patch with the merge keys of
the pod template's lists (from the x-kubernetes-patch-merge-key fields of the apps/v1 OpenAPI spec);
label selectors (equality- and set-based) and the field selectors the API serves on every resource.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

# Lists under a Deployment that strategic merge patch merges by key (PodSpec, Container); every other
# list is replaced whole. Field names are unambiguous within apps/v1 Deployments and ReplicaSets.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "imagePullSecrets": "name",
    "volumes": "name",
    "env": "name",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
}


class PatchError(ValueError):
    """The patch cannot be applied (422 Invalid) or does not even parse (`malformed`: 400 BadRequest)."""

    def __init__(self, message: str, *, malformed: bool = False):
        self.malformed = malformed
        super().__init__(message)


def apply_patch(document: dict[str, Any], patch: Any, content_type: str) -> dict[str, Any]:
    """Apply a patch of the given media type; the input is left untouched."""
    if content_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch", malformed=True)
        return json_patch(document, patch)
    if not isinstance(patch, dict):
        raise PatchError("json: cannot unmarshal array into Go value of type map[string]interface {}", malformed=True)
    if content_type == MERGE_PATCH:
        return merge_patch(copy.deepcopy(document), patch)  # type: ignore[no-any-return]
    if content_type == STRATEGIC_MERGE_PATCH:
        return strategic_merge(copy.deepcopy(document), patch, field="")  # type: ignore[no-any-return]
    raise PatchError(f"unsupported patch type {content_type}", malformed=True)


# -- JSON Patch ------------------------------------------------------------------------------------


def json_patch(document: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    """RFC 6902: add, remove, replace, move, copy, test; all or nothing."""
    doc: Any = copy.deepcopy(document)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON Patch operation: {op!r}", malformed=True)
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _put(doc, path, copy.deepcopy(_value(op)), insert=True)
        elif kind == "remove":
            doc, _ = _take(doc, path)
        elif kind == "replace":
            doc, _ = _take(doc, path)
            doc = _put(doc, path, copy.deepcopy(_value(op)), insert=True)
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise PatchError(f"{kind} operation has no 'from'")
            value = copy.deepcopy(_get(doc, source))
            if kind == "move":
                doc, _ = _take(doc, source)
            doc = _put(doc, path, value, insert=True)
        elif kind == "test":
            if _get(doc, path) != _value(op):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}", malformed=True)
    return doc  # type: ignore[no-any-return]


def _value(op: dict[str, Any]) -> Any:
    if "value" not in op:
        raise PatchError(f"{op['op']} operation has no 'value'")
    return op["value"]


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer must start with '/': {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    tokens = _tokens(path)
    if not tokens:
        raise PatchError("the whole document cannot be patched")
    parent = _get(doc, "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens[:-1]), path)
    return parent, tokens[-1]


def _index(container: list[Any], segment: str, path: str, *, insert: bool) -> int:
    if segment == "-" and insert:
        return len(container)
    if not segment.isdigit() or int(segment) > len(container) - (0 if insert else 1):
        raise PatchError(f"doc is missing path: {path}: missing value")
    return int(segment)


def _get(doc: Any, path: str, whole: str | None = None) -> Any:
    node = doc
    for token in _tokens(path):
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, whole or path, insert=False)]
        else:
            raise PatchError(f"doc is missing path: {whole or path}: missing value")
    return node


def _put(doc: Any, path: str, value: Any, *, insert: bool) -> Any:
    if path == "":
        return value
    parent, token = _parent(doc, path)
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, path, insert=insert), value)
    else:
        raise PatchError(f"doc is missing path: {path}: missing value")
    return doc


def _take(doc: Any, path: str) -> tuple[Any, Any]:
    parent, token = _parent(doc, path)
    if isinstance(parent, dict) and token in parent:
        return doc, parent.pop(token)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, token, path, insert=False))
    raise PatchError(f"doc is missing path: {path}: missing value")


# -- merge patches ---------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge, null deletes, everything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(target: Any, patch: Any, *, field: str) -> Any:
    """Strategic merge: maps merge (with $patch and $retainKeys), lists merge by their merge key."""
    if isinstance(patch, list):
        return _merge_list(target, patch, field=field)
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            orders[key.partition("/")[2]] = value
        elif key.startswith("$deleteFromPrimitiveList/"):
            name = key.partition("/")[2]
            result[name] = [v for v in result.get(name) or [] if v not in value]
        elif key.startswith("$"):
            continue  # $retainKeys is handled below
        elif value is None:
            result.pop(key, None)
        else:
            merged = strategic_merge(result.get(key), value, field=key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    for name, order in orders.items():
        result[name] = _ordered(result.get(name) or [], order, MERGE_KEYS.get(name))
    if isinstance(patch.get("$retainKeys"), list):
        result = {k: v for k, v in result.items() if k in patch["$retainKeys"]}
    return result


def _merge_list(target: Any, patch: list[Any], *, field: str) -> list[Any]:
    key = MERGE_KEYS.get(field)
    items = [i for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    if key is None or len(items) != len(patch) or not isinstance(target, list):
        return copy.deepcopy(items)  # no merge key, an explicit replace, or nothing to merge into
    result = [copy.deepcopy(i) for i in target]
    for item in items:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"map: {item!r} does not contain declared merge key: {key}")
        at = next((n for n, old in enumerate(result) if isinstance(old, dict) and old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if at is not None:
                result.pop(at)
        elif at is None:
            result.append(strategic_merge({}, item, field=""))
        else:
            result[at] = strategic_merge(result[at], item, field="")
    return result


def _ordered(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def ident(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    wanted = [ident(o) for o in order]
    return sorted(items, key=lambda i: wanted.index(ident(i)) if ident(i) in wanted else len(wanted))


# -- selectors -------------------------------------------------------------------------------------

_REQUIREMENT = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<absent>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?)\s*$"
)


def label_selector(text: str) -> Callable[[dict[str, str]], bool]:
    """Parse a labelSelector query parameter into a predicate over an object's labels."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    for part in _split(text):
        match = _REQUIREMENT.match(part)
        if match is None:
            raise PatchError(f"unable to parse requirement: {part!r}")
        g = match.groupdict()
        if g["not"]:
            tests.append(lambda labels, k=g["absent"]: k not in labels)
        elif g["op"] in ("=", "=="):
            tests.append(lambda labels, k=g["key"], v=g["value"]: labels.get(k) == v)
        elif g["op"] == "!=":
            tests.append(lambda labels, k=g["key"], v=g["value"]: labels.get(k) != v)
        elif g["setop"]:
            values = {v.strip() for v in g["values"].split(",")}
            inside = g["setop"] == "in"
            tests.append(lambda labels, k=g["key"], vs=values, i=inside: (k in labels and labels[k] in vs) == i)
        else:
            tests.append(lambda labels, k=g["key"]: k in labels)
    return lambda labels: all(t(labels) for t in tests)


def field_selector(text: str) -> Callable[[dict[str, Any]], bool]:
    """metadata.name and metadata.namespace with = / == / != (what every resource supports)."""
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for part in _split(text):
        match = re.match(r"^\s*(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if match is None:
            raise PatchError(f'field label not supported: "{part.split("=")[0].rstrip("!")}"')
        attribute, op, value = match.groups()
        equal = op != "!="
        name = attribute.partition(".")[2]
        tests.append(lambda obj, a=name, v=value, e=equal: (obj["metadata"].get(a) == v) == e)
    return lambda obj: all(t(obj) for t in tests)


def _split(text: str) -> list[str]:
    """Split on the commas that are not inside a set's parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]
