"""`incident-worker demo --auto-approve`: the newcomer's first command works end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

from worker.testing.postgres import free_port


def test_demo_rolls_the_fake_deployment_back_after_approval(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo", "--auto-approve", "--port", str(port)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"http://127.0.0.1:{port}/approvals/" in out
    assert "shop/checkout at revision 3, image registry.example.com/checkout:1.43" in out
    assert "shop/checkout now at revision 4, image registry.example.com/checkout:1.42" in out
    assert "rollback verified" in out
    assert "finished: succeeded" in out
    assert list(tmp_path.iterdir()) == []  # a demo that worked leaves nothing behind
