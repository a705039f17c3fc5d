"""The container image's recipe: the wheel it installs carries every file the worker reads at run time, and
the Dockerfile's command, paths and settings are ones the worker accepts. (No Docker daemon here: the
image itself is not built in CI.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, WEBHOOKS

from worker.cli import _parser
from worker.settings import Settings
from worker.testing.live import LiveWorker

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instruction(name: str) -> list[str]:
    """The arguments of every `name` instruction in the final stage, continuation lines joined."""
    final = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    joined = re.sub(r"\\\n\s*", " ", final)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", joined, re.MULTILINE)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The worker's wheel, built as the Dockerfile's build stage builds it."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"  # a copy: setuptools writes build/ beside the sources
    shutil.copytree(ROOT / "worker", source / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), "."],
        cwd=source,
        check=True,
        timeout=300,
        capture_output=True,
    )
    (built,) = (work / "dist").glob("incident_worker-*.whl")
    return built


def test_the_wheel_carries_every_file_of_the_package(wheel: Path) -> None:
    packed = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("worker/")}
    tracked = subprocess.run(["git", "ls-files", "worker"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(tracked.stdout.split()) - packed == set()  # templates, migrations and their script template
    assert any(name.endswith(".html") for name in packed) and any("migrations/versions" in n for n in packed)


def test_the_installed_wheel_migrates_serves_and_classifies(wheel: Path, tmp_path: Path) -> None:
    # Installed as the image installs it (not this checkout): migrations, templates and config load from it.
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    env = {
        "PYTHONPATH": str(site),
        "WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'incident-worker.db'}",
        "WORKER_ALERTMANAGER_TOKEN": "image-token",
    }
    where = subprocess.run(
        [sys.executable, "-c", "import worker; print(worker.__file__)"],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(site))
    with LiveWorker(env=env, cwd=tmp_path, config_dir=ROOT / "config", playbooks_dir=ROOT / "playbooks") as live:
        headers = {"Content-Type": "application/json", "Authorization": "Bearer image-token"}
        body = (WEBHOOKS / "alertmanager" / "firing-single.json").read_bytes()
        assert httpx.post(f"{live.url}/webhooks/alertmanager", content=body, headers=headers).status_code == 202
        deadline = time.monotonic() + 30
        while not (found := httpx.get(f"{live.url}/api/incidents").json()["incidents"]):
            assert time.monotonic() < deadline, "not classified"
            time.sleep(0.2)
        assert found[0]["severity"].startswith("SEV")
        assert httpx.get(f"{live.url}/").status_code == 200  # the console's templates came with the wheel


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
