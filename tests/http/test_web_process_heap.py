"""The web process exempts what it loaded at start from the garbage collector: otherwise every full
collection walks the clients, models and config (hundreds of thousands of objects) and stalls every
webhook in flight for tens of milliseconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import CONFIG

PROBE = """
import gc, json, sys, time
from pathlib import Path
from worker.http.server import WebServer
from worker.settings import Settings
from worker.store import migrate
from worker.store.db import make_engine

settings = Settings.from_env(config_dir=Path(sys.argv[1]), playbooks_dir=Path(sys.argv[2]))
migrate.upgrade(make_engine(settings.database_url))
server = WebServer.__new__(WebServer)  # load() alone, as a gunicorn worker calls it after the fork
server.settings = settings
app = server.load()
started = time.perf_counter()
gc.collect()
print(json.dumps({"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects()),
                  "full_collection_ms": (time.perf_counter() - started) * 1000}))
"""


def test_objects_loaded_at_start_are_left_out_of_full_collections(tmp_path: Path) -> None:
    env = {"WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(CONFIG), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    heap = json.loads(out.strip().splitlines()[-1])
    # What start-up loaded is frozen; what a full collection still walks is a small remainder of it.
    assert heap["frozen"] > 50_000, heap
    assert heap["tracked"] < heap["frozen"] / 10, heap
