"""`lint` reads each file as serve would: the config directory's files as config, any YAML file under another
directory as a playbook, whatever its name; a file serve would ignore is said to be ignored. And a broken
config hides none of the playbooks' own problems."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import CONFIG, PLAYBOOKS

from worker.classify.config import load_catalog
from worker.cli import main
from worker.playbooks.loader import load_playbooks

NOTE = """name: {name}
match: {{service: {service}}}
steps:
  - id: note
    action: pagerduty.note
    with: {{content: "{content}"}}
"""


def lint(*args: str | Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["lint", *map(str, args)])
    return code, capsys.readouterr().out.splitlines()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding config/ and playbooks/ as the examples, where `lint` with no path looks."""
    shutil.copytree(CONFIG, tmp_path / "config")
    shutil.copytree(PLAYBOOKS, tmp_path / "playbooks")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_playbook_named_like_a_config_file_is_linted_as_the_playbook_serve_loads(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    books = project / "playbooks"
    (books / "services.yaml").write_text(NOTE.format(name="services", service="checkout", content="hello"))
    (books / "sub").mkdir()
    (books / "sub" / "severity.yml").write_text(NOTE.format(name="severity", service="checkuot", content="hello"))
    assert lint(capsys=capsys) == (
        1,
        [
            "playbooks/sub/severity.yml:2:18: match.service: unknown service 'checkuot' "
            "(catalog: checkout, payments, search)"
        ],
    )
    (books / "sub" / "severity.yml").unlink()
    assert lint(capsys=capsys) == (0, [])
    assert lint("--config", "config", books, capsys=capsys) == (0, [])
    assert lint("--config", "config", books / "services.yaml", capsys=capsys)[0] == 1  # on its own: read as config


def test_a_yaml_file_in_the_config_directory_that_serve_ignores_is_reported_as_ignored(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = project / "config"
    (config / "team-notes.yaml").write_text("owner_notes: see wiki\n")
    (config / "communication.yaml").write_text("cadence: {SEV1: 10m}\n")  # misspelt: serve would use the defaults
    (config / "README.md").write_text("not YAML: nothing to say\n")
    (config / "..2026_01_01").mkdir()  # a ConfigMap mount's copies: serve reads no subdirectory
    (config / "..2026_01_01" / "services.yaml").write_text("services: nonsense\n")
    ignored = "serve ignores this file: it reads only severity.yaml, services.yaml, approvals.yaml, communications.yaml"
    expected = [
        f"config/communication.yaml:1:1: {ignored} (did you mean communications.yaml?)",
        f"config/team-notes.yaml:1:1: {ignored} (a playbook belongs in the playbooks directory)",
    ]
    assert lint(capsys=capsys) == (1, expected)
    assert lint("--config", "config", "config", capsys=capsys) == (1, expected)
    assert lint("--config", "config", ".", capsys=capsys) == (1, expected)  # a tree holding the config directory
    assert lint("--config", "config", "config/team-notes.yaml", capsys=capsys) == (1, expected[1:])
    assert lint("--config", "config", "config/services.yaml", capsys=capsys) == (0, [])


def test_a_broken_config_elsewhere_hides_none_of_a_playbooks_own_problems(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    severity = project / "config" / "severity.yaml"
    text = severity.read_text()
    assert "grouping_window: 30m" in text
    severity.write_text(text.replace("grouping_window: 30m", "grouping_window: 30 minutes", 1))
    books = project / "playbooks"
    (books / "typo.yaml").write_text(NOTE.format(name="typo", service="checkout", content="{{ incident.titel }}"))
    (books / "ids.yaml").write_text(
        "name: ids\nmatch: {service: checkout}\nsteps:\n"
        "  - {id: a, action: wait, with: {duration: soon}}\n  - {id: a, action: wait, with: {duration: 5s}}\n"
    )
    (books / "restart-copy.yaml").write_text(NOTE.format(name="checkout-restart", service="checkout", content="hi"))
    code, out = lint(capsys=capsys)
    config_lines = [line for line in out if line.startswith("config/")]
    assert code == 1 and config_lines and all(line.startswith("config/severity.yaml:") for line in config_lines)
    books_out = [line for line in out if not line.startswith("config/")]
    assert any(line.startswith("playbooks/ids.yaml:") and "step id 'a' is used twice" in line for line in books_out)
    assert [line for line in books_out if "used twice" not in line] == [
        "playbooks/ids.yaml:4:44: steps[0].with.duration: invalid duration 'soon': expected a number with a unit, "
        "e.g. 90s, 5m, 2h, 1h30m (action wait)",
        "playbooks/restart-copy.yaml:1:7: name: playbook name 'checkout-restart' is also used in "
        "playbooks/checkout-restart.yaml",
        "playbooks/typo.yaml:6:21: steps[0].with.content: template error: 'dict object' has no attribute 'titel'",
    ]


def test_without_a_valid_services_yaml_each_playbook_is_said_to_be_unchecked(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "config" / "services.yaml").write_text("services: 5\n")
    code, out = lint(capsys=capsys)
    books = sorted(p.name for p in (project / "playbooks").glob("*.yaml"))
    assert code == 1 and out == [
        "config/services.yaml:1:11: services: Input should be a valid list",
        *(f"playbooks/{name}:1:1: not checked: the config's services.yaml has problems" for name in books),
    ]


def test_a_configmap_mounted_playbooks_directory_loads_each_playbook_once(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As the kubelet mounts a ConfigMap: the files in a hidden timestamped directory, linked from the top.
    mounted = project / "mounted"
    (mounted / "..2026_12_07_20_00_00.1").mkdir(parents=True)
    shutil.copy(PLAYBOOKS / "checkout-restart.yaml", mounted / "..2026_12_07_20_00_00.1" / "checkout-restart.yaml")
    (mounted / "..data").symlink_to("..2026_12_07_20_00_00.1")
    (mounted / "checkout-restart.yaml").symlink_to("..data/checkout-restart.yaml")
    assert lint("--config", "config", mounted, capsys=capsys) == (0, [])
    catalog = load_catalog(project / "config")
    loaded, problems = load_playbooks(mounted, catalog=catalog)
    assert problems == [] and [Path(book.file).name for book in loaded] == ["checkout-restart.yaml"]
