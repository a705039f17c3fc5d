"""YAML merge keys (<<) as the YAML spec means them, read once each however often they are merged."""

from __future__ import annotations

from worker.yamlfile import parse_yaml


def test_keys_written_in_the_mapping_win_over_merged_ones_in_either_order() -> None:
    doc = parse_yaml(
        "defaults: &d {id: pause, action: wait, timeout: 5m}\nstep: {timeout: 1m, <<: *d, id: own}\n", file="p.yaml"
    )
    assert doc.problems == []
    assert doc.data["step"] == {"id": "own", "action": "wait", "timeout": "1m"}
    assert doc.position(("step", "timeout"), at_key=True) == (2, 8)  # where the mapping itself wrote it


def test_a_list_of_merges_takes_the_first_mappings_keys_first() -> None:
    doc = parse_yaml("a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc: {<<: [*a, *b]}\n", file="p.yaml")
    assert doc.data["c"] == {"x": 1, "y": 2}


def test_merges_of_merges_are_read_once_each_not_once_per_use() -> None:
    lines = ["a0: &a0 {x: 1, y: 2}"]
    lines += [f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 10)}]}}" for i in range(1, 9)]
    doc = parse_yaml("\n".join(lines) + "\n", file="p.yaml")  # expanded, 10^8 mappings
    assert doc.problems == [] and doc.data["a8"] == {"x": 1, "y": 2}
    assert doc.visited < 100, doc.visited


def test_a_duplicate_key_in_a_merged_mapping_is_reported_once_where_it_is_written() -> None:
    doc = parse_yaml("base: &base {x: 1, x: 2}\nm1: {<<: *base}\nm2: {<<: *base}\n", file="p.yaml")
    assert [(p.line, p.col, p.path, p.message) for p in doc.problems] == [(1, 20, "base.x", "duplicate key")]


def test_a_merged_value_is_positioned_where_its_mapping_wrote_it_at_every_merge() -> None:
    doc = parse_yaml(
        "defaults: &d {id: p, action: wait, timeout: bad}\nsteps:\n  - {<<: *d}\n  - {<<: *d, id: q}\n", file="p.yaml"
    )
    assert doc.position(("steps", 0, "timeout")) == doc.position(("steps", 1, "timeout")) == (1, 45)
    assert doc.position(("steps", 1, "id"), at_key=True) == (4, 14)  # written in the step itself
