"""`incident-worker lint` points at the exact FILE:LINE:COL of each problem, including the hard cases:
a problem found by a whole-model validator, a value left empty, and a file that is not UTF-8."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONFIG

from worker.cli import main


def lint(path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["lint", "--config", str(CONFIG), str(path)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return [line.removeprefix(f"{path}:") for line in out.splitlines()]


def test_a_repeated_step_id_is_reported_at_each_repetition(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(
        "name: t\nmatch: {service: checkout}\nsteps:\n"
        "  - id: a\n    action: wait\n    with: {duration: 30s}\n"
        "  - id: a\n    action: wait\n    with: {duration: 30s}\n"
        "  - {id: b, action: wait, with: {duration: 1s}}\n"
        "  - {id: a, action: wait, with: {duration: 1s}}\n"
    )
    assert lint(path, capsys) == [
        "7:9: steps[1].id: step id 'a' is used twice",
        "11:10: steps[3].id: step id 'a' is used twice",
    ]


def test_an_empty_value_is_reported_at_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(
        "name: t\nmatch: {service: checkout}\nsteps:\n"
        "  - id: a\n    action: kubernetes.scale\n    with:\n    timeout: 5s\n\n\n"
        "  - id: b\n    action: wait\n    with: {duration: 5s}\n"
    )
    assert lint(path, capsys) == ["6:5: steps[0].with: Input should be a valid dictionary"]


def test_an_empty_mapping_value_is_reported_at_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("name: t\nmatch:\nsteps:\n  - id: a\n    action: wait\n    with: {duration: 5s}\n")
    assert lint(path, capsys) == ["2:1: match: Input should be a valid dictionary or instance of Match"]


def test_an_empty_last_value_is_reported_at_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("name: t\nmatch: {service: checkout}\nsteps:\n")
    assert lint(path, capsys) == ["3:1: steps: Input should be a valid list"]


def test_a_file_not_in_utf8_is_reported_at_the_first_bad_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "latin1.yaml"
    text = "name: t\nmatch: {service: checkout}\nsteps:\n  - id: a\n    action: pagerduty.note\n"
    # "né" in UTF-8 (two bytes, one character) before the Latin-1 é: the column counts characters.
    path.write_bytes(text.encode() + '    with: {content: "né'.encode() + b'\xe9"}\n')
    assert lint(path, capsys) == ["6:24: cannot read file: not UTF-8: byte 0xe9 (invalid continuation byte)"]


def test_a_file_cut_inside_a_character_is_reported_there(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cut.yaml"
    path.write_bytes("name: t\n# €".encode()[:-1])
    assert lint(path, capsys) == ["2:3: cannot read file: not UTF-8: byte 0xe2 (unexpected end of data)"]
