"""YAML documents that remember where every value came from, so problems read FILE:LINE:COL: PATH: MESSAGE.

PyYAML silently keeps the last of two duplicate keys; ruamel's composer gives us the nodes with
their marks, so we detect duplicates ourselves and report all of them, not just the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML, nodes
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from worker.errors import Problem

PathKey = tuple[str | int, ...]
# A config or playbook file has hundreds of values; far more means aliases repeating aliases (each is
# expanded where it is used), which would take memory and time without end.
MAX_VALUES = 100_000


class _Unreadable(Exception):
    """A document that composes but cannot become data: at `node`, because of `reason`."""

    def __init__(self, node: nodes.Node, reason: str):
        super().__init__(reason)
        self.node, self.reason = node, reason


def format_path(path: PathKey) -> str:
    """('steps', 0, 'with') -> 'steps[0].with'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class YamlDocument:
    """Parsed data plus the (line, col) of every key and value, 1-based."""

    file: str
    data: Any
    keys: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    values: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    visited: int = field(default=0, repr=False)  # nodes walked, an alias's each time it is expanded
    # Every mapping walked, by node: its data and its keys' (key, value) positions, for merges to reuse.
    merged: dict[int, tuple[dict[Any, Any], dict[Any, tuple[Any, Any]]]] = field(default_factory=dict, repr=False)

    def position(self, path: PathKey, *, at_key: bool = False) -> tuple[int, int]:
        """Where `path` is written; the nearest written ancestor when it is missing."""
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            table = self.keys if at_key and end == len(path) else self.values
            if prefix in table:
                return table[prefix]
            if prefix in self.keys:
                return self.keys[prefix]
        return (1, 1)

    def problem(self, path: PathKey, message: str, *, at_key: bool = False) -> Problem:
        line, col = self.position(path, at_key=at_key)
        return Problem(self.file, line, col, format_path(path), message)

    def validation_problems(self, exc: ValidationError, *, prefix: PathKey = (), suffix: str = "") -> list[Problem]:
        """Map pydantic errors onto the YAML positions of the fields they name."""
        problems = []
        for error in exc.errors(include_url=False):
            loc = prefix + _clean_loc(error["loc"])
            kind = error["type"]
            message = _message(error) + suffix
            problems.append(self.problem(loc, message, at_key=kind == "extra_forbidden"))
        return problems


def load_yaml(path: Path, *, display: str | None = None) -> YamlDocument:
    """Read a YAML file; syntax errors and duplicate keys become problems, never exceptions."""
    name = display or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return YamlDocument(name, None, problems=[Problem(name, 1, 1, "", f"cannot read file: {exc}")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # At the first bad byte, counted in characters of its line (what comes before it is UTF-8).
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line, col = data.count(b"\n", 0, exc.start) + 1, len(data[line_start : exc.start].decode("utf-8")) + 1
        message = f"cannot read file: not UTF-8: byte 0x{data[exc.start]:02x} ({exc.reason})"
        return YamlDocument(name, None, problems=[Problem(name, line, col, "", message)])
    return parse_yaml(text, file=name)


def parse_yaml(text: str, *, file: str) -> YamlDocument:
    """Parse YAML text (see load_yaml)."""
    doc = YamlDocument(file, None)
    try:
        root = YAML(typ="rt", pure=True).compose(text)
    except RecursionError:
        doc.problems.append(Problem(file, 1, 1, "", "YAML nested too deeply"))
        return doc
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = " ".join(filter(None, [exc.context, exc.problem]))
        doc.problems.append(Problem(file, line, col, "", f"YAML syntax error: {reason}"))
        return doc
    except YAMLError as exc:  # the reader's (a control character): a position in characters, no mark
        position = getattr(exc, "position", None)
        line, col = (1, 1)
        if isinstance(position, int):
            line, col = text.count("\n", 0, position) + 1, position - text.rfind("\n", 0, position)
        reason = next(iter(str(exc).splitlines()), type(exc).__name__)
        doc.problems.append(Problem(file, line, col, "", f"YAML syntax error: {reason}"))
        return doc
    if root is None:
        doc.data = None
        return doc
    try:
        doc.data = _walk(root, (), doc, set())
    except _Unreadable as exc:
        mark = exc.node.start_mark
        doc.problems.append(Problem(file, mark.line + 1, mark.column + 1, "", exc.reason))
        doc.data = None
    except RecursionError:
        doc.problems.append(Problem(file, 1, 1, "", "YAML nested too deeply"))
        doc.data = None
    return doc


def _walk(node: nodes.Node, path: PathKey, doc: YamlDocument, within: set[int]) -> Any:
    """The data at `node`; `within` holds the collections it is inside of (an alias may name one)."""
    if id(node) in within:
        raise _Unreadable(node, "an alias refers to a value that contains it")
    doc.visited += 1
    if doc.visited > MAX_VALUES:
        raise _Unreadable(node, f"more than {MAX_VALUES} values (aliases repeating aliases?)")
    doc.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, nodes.CollectionNode):
        within.add(id(node))
        try:
            return _walk_collection(node, path, doc, within)
        finally:
            within.discard(id(node))
    return _scalar(node)


def _walk_collection(node: nodes.CollectionNode, path: PathKey, doc: YamlDocument, within: set[int]) -> Any:
    if isinstance(node, nodes.SequenceNode):
        return [_walk(item, (*path, i), doc, within) for i, item in enumerate(node.value)]
    # Merge keys (`<<: *defaults`) first: keys written in the mapping itself win over merged ones, and
    # their positions over the merged ones' (which stay where the merged mapping wrote them).
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if _tag(key_node) == _MERGE:
            for source in value_node.value if isinstance(value_node, nodes.SequenceNode) else [value_node]:
                if not isinstance(source, nodes.MappingNode):
                    raise _Unreadable(source, "a merge key (<<) takes a mapping or a list of mappings")
                if id(source) not in doc.merged:  # once: merges of merges would walk it again at every level
                    _walk(source, path, doc, within)
                data, positions = doc.merged[id(source)]
                for key, value in data.items():
                    if key not in out:  # a merged key is positioned where its mapping wrote it
                        out[key] = value
                        key_at, value_at = positions[key]
                        if key_at and value_at:
                            doc.keys[(*path, str(key))], doc.values[(*path, str(key))] = key_at, value_at
    doc.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    written: set[Any] = set()
    for key_node, value_node in node.value:
        if _tag(key_node) == _MERGE:
            continue
        if not isinstance(key_node, nodes.ScalarNode):
            raise _Unreadable(key_node, "a key must be a single value, not a list or a mapping")
        key = _scalar(key_node)
        key_path = (*path, str(key))
        if key in written:
            doc.problems.append(
                Problem(
                    doc.file,
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                    format_path(key_path),
                    "duplicate key",
                )
            )
            continue
        written.add(key)
        doc.keys[key_path] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        out[key] = _walk(value_node, key_path, doc, within)
        if _is_empty(value_node):  # `key:` and nothing: its (empty) node is marked where the next token is
            doc.values[key_path] = doc.keys[key_path]
    positions = {key: (doc.keys.get((*path, str(key))), doc.values.get((*path, str(key)))) for key in out}
    doc.merged.setdefault(id(node), (out, positions))  # a later merge of this mapping takes it as read here
    return out


_RESOLVER = YAML(typ="safe", pure=True)
_MERGE = "tag:yaml.org,2002:merge"


def _is_empty(node: nodes.Node) -> bool:
    """A value left out (`key:` with nothing after it): a plain scalar of no characters at all."""
    return isinstance(node, nodes.ScalarNode) and node.style is None and node.start_mark.index == node.end_mark.index


def _tag(node: nodes.Node) -> str | None:
    return node.tag.value if hasattr(node.tag, "value") else node.tag


def _scalar(node: nodes.Node) -> Any:
    """Resolve a scalar node as the safe loader would (ints, floats, bools, nulls, strings)."""
    if _tag(node) is None or node.style in ("'", '"', "|", ">"):
        return node.value
    try:
        return _RESOLVER.constructor.construct_object(node, deep=True)
    except (YAMLError, ValueError, TypeError, OverflowError) as exc:  # `!!int abc`, `!foo`, 5,000 digits
        reason = getattr(exc, "problem", None) or str(exc)
        raise _Unreadable(node, f"cannot read this value: {reason}") from None


def _clean_loc(loc: tuple[Any, ...]) -> PathKey:
    # pydantic adds union-member and function-validator names to locations; they are not YAML keys.
    internal = ("function-", "tagged-union")
    return tuple(part for part in loc if isinstance(part, int) or not str(part).startswith(internal))


def _message(error: Any) -> str:
    msg = str(error["msg"])
    if error["type"] == "extra_forbidden":
        return "unknown key"
    return msg.removeprefix("Value error, ")
