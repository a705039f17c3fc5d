"""Who holds a claim or a lease, and whether that holder is certainly gone.

A holder id names the host, the process, a random part (pids are reused) and the kernel boot and PID
namespace the pid belongs to. A process on this host, in this boot and PID namespace, that no longer
exists can never finish what it claimed: whoever finds its claim may take it over at once rather than
wait for the claim to expire. So after `kill -9`, the worker that systemd or Kubernetes restarts resumes
an interrupted step within a poll, not after the step's whole time budget, and recovery (which checks
what the dead process already changed) runs as it would have after the expiry.

Anything that cannot be proven gone counts as alive: another host or container, an unknown format, a pid
that exists (even if reused). Waiting for the expiry stays the rule; this only shortens the certain case.
"""

from __future__ import annotations

import os
import socket
import uuid
from functools import cache
from pathlib import Path


def holder_id() -> str:
    """This process's holder id: host:pid:random:namespace."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{_namespace()}"


def is_gone(holder: str | None) -> bool:
    """True only when `holder` is a process of this host, boot and PID namespace that no longer exists."""
    parts = (holder or "").split(":")
    if len(parts) != 4:
        return False
    host, pid, _, namespace = parts
    if host != socket.gethostname() or not namespace or namespace != _namespace() or not pid.isdigit():
        return False
    if int(pid) in (0, os.getpid()):
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, under another user
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    # Killed but not yet reaped by its parent: it exists, yet will never run again.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].startswith("Z")


@cache
def _namespace() -> str:
    """The kernel boot and PID namespace, or "" where /proc does not tell (then nobody is ever 'gone')."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:12]
        pid_namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot}.{pid_namespace}"
