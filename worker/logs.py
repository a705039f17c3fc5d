"""Log lines for operators: text (time, level, logger, pid, message) or JSON, one object per line, for log
collectors; at WORKER_LOG_LEVEL. The long-running verbs configure this once per process."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
# Libraries that narrate every request (with its URL, where a playbook may have put a secret), retries and
# credential discovery: their warnings only, whatever the level. The worker logs its calls itself, redacted.
_CHATTY = ("urllib3", "botocore", "boto3", "kubernetes", "httpx", "httpx2", "httpcore", "alembic")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(*, level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send every logger's records at `level` or above to `stream` (stderr), as text or JSON."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel("WARNING")
