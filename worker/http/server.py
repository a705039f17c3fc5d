"""Run the app under gunicorn: threaded workers, the background loops inside each worker."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from worker.engine.runtime import Runtime
from worker.http.app import create_app
from worker.settings import Settings


class WorkerServer(BaseApplication):  # type: ignore[misc]
    """Gunicorn application: each worker builds its own Runtime after the fork."""

    def __init__(self, settings: Settings, options: dict[str, Any]):
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Migrations already ran in the master; each worker opens its own pool after the fork.
        runtime = Runtime.build(self.settings, migrate_db=False)
        runtime.start_background()
        return create_app(runtime)


def serve(settings: Settings, *, host: str, port: int, workers: int = 1, threads: int = 16) -> None:
    """Block serving HTTP on host:port until stopped."""
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "incident-worker",
    }
    WorkerServer(settings, options).run()
