"""Bad config files: `incident-worker lint` prints FILE:LINE:COL: PATH: MESSAGE (golden files), `serve` refuses them.

Each case under tests/fixtures/config_invalid/<case>/ holds one bad severity.yaml or services.yaml and
expected.txt, the exact lint output for it (positions checked by hand against the YAML).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIG, FIXTURES

from worker.testing.postgres import free_port

CASES = sorted(p for p in (FIXTURES / "config_invalid").iterdir() if p.is_dir())


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def bad_file(case: Path) -> Path:
    (found,) = [p for p in case.iterdir() if p.suffix == ".yaml"]
    return found


def test_every_case_has_a_golden_file() -> None:
    assert len(CASES) >= 8
    for case in CASES:
        expected = (case / "expected.txt").read_text()
        name = bad_file(case).name
        assert expected and all(line.startswith(f"{name}:") for line in expected.splitlines()), case.name


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_lint_prints_the_golden_problems_and_serve_refuses_with_the_same(case: Path, tmp_path: Path) -> None:
    bad = bad_file(case)
    expected = (case / "expected.txt").read_text().splitlines()
    # serve on a config directory holding the bad file next to a good copy of the other one
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    shutil.copy(bad, config / bad.name)
    env = {"WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}"}
    serve = run("serve", "--config", str(config), "--port", str(free_port()), cwd=tmp_path, env=env)
    lint = run("lint", "--config", str(CONFIG), bad.name, cwd=case)
    code, out, err = finish(lint)
    assert (code, out.splitlines(), err) == (1, expected, "")
    code, out, err = finish(serve)
    assert code != 0
    assert [line for line in err.splitlines() if line.startswith(str(config))] == [
        f"{config}/{line}" for line in expected
    ]
    assert "Traceback" not in err
    assert not (tmp_path / "w.db").exists()  # refused before touching the database


def test_lint_of_a_config_directory_reports_every_file_sorted(tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    shutil.copy(FIXTURES / "config_invalid/services_bad_entries/services.yaml", config / "services.yaml")
    shutil.copy(FIXTURES / "config_invalid/severity_unknown_key/severity.yaml", config / "severity.yaml")
    code, out, _ = finish(run("lint", "--config", "config", "config", cwd=tmp_path))
    expected = [
        f"config/{line}"
        for case in ("services_bad_entries", "severity_unknown_key")
        for line in (FIXTURES / "config_invalid" / case / "expected.txt").read_text().splitlines()
    ]
    assert code == 1 and out.splitlines() == expected
    code, out, _ = finish(run("lint", "--config", "config", "--format", "json", "config", cwd=tmp_path))
    problems = json.loads(out)
    assert code == 1 and problems[0] == {
        "file": "config/services.yaml",
        "line": 4,
        "col": 11,
        "path": "services[0].tier",
        "message": "Input should be a valid integer, unable to parse string as an integer",
    }


def test_the_example_config_is_clean() -> None:
    code, out, err = finish(run("lint", "--config", str(CONFIG), str(CONFIG), cwd=CONFIG.parent))
    assert (code, out, err) == (0, "", "")
