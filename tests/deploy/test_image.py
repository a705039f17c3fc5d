"""The container image's recipe: the wheel it installs carries every file the worker reads at run time, and
the Dockerfile's command, paths and settings are ones the worker accepts. (No Docker daemon here: the
image itself is not built in CI.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT

from worker.cli import _parser
from worker.settings import Settings

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instruction(name: str) -> list[str]:
    """The arguments of every `name` instruction in the final stage, continuation lines joined."""
    final = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    joined = re.sub(r"\\\n\s*", " ", final)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", joined, re.MULTILINE)]


def test_the_wheel_carries_every_file_of_the_package(tmp_path: Path) -> None:
    source = tmp_path / "src"  # what the Dockerfile copies into its build stage (setuptools writes build/ there)
    shutil.copytree(ROOT / "worker", source / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), "."],
        cwd=source,
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("incident_worker-*.whl")
    packed = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("worker/")}
    tracked = subprocess.run(["git", "ls-files", "worker"], cwd=ROOT, capture_output=True, text=True, check=True)
    wanted = set(tracked.stdout.split())
    assert wanted - packed == set()  # templates, migrations and their script template included
    assert any(name.endswith(".html") for name in packed) and any("migrations/versions" in n for n in packed)


def test_the_command_is_one_the_worker_accepts_with_the_baked_in_files() -> None:
    (entrypoint,) = instruction("ENTRYPOINT")
    (command,) = instruction("CMD")
    assert json.loads(entrypoint) == ["incident-worker"]
    args = _parser().parse_args(json.loads(command))
    assert (args.host, args.port) == ("0.0.0.0", 8080)  # noqa: S104 - a container listens on all interfaces
    copied = {line.split()[-1].rstrip("/") for line in instruction("COPY") if not line.startswith("--from")}
    (workdir,) = instruction("WORKDIR")
    assert {str(args.config), str(args.playbooks)} <= {f"{workdir}/{path.removeprefix('./')}" for path in copied}
    assert instruction("EXPOSE") == [str(args.port)]
    (healthcheck,) = instruction("HEALTHCHECK")
    assert f"127.0.0.1:{args.port}/healthz" in healthcheck


def test_the_default_database_is_sqlite_on_the_data_volume() -> None:
    (environment,) = [line for line in instruction("ENV") if "WORKER_DATABASE_URL" in line]
    url = re.search(r"WORKER_DATABASE_URL=(\S+)", environment).group(1)  # type: ignore[union-attr]
    assert Settings.from_env({"WORKER_DATABASE_URL": url}).database_url == "sqlite:////data/incident-worker.db"
    assert instruction("VOLUME") == ['["/data"]']
    assert instruction("USER") == ["10001"]  # not root; the chart's podSecurityContext says the same
