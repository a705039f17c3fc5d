"""gunicorn settings for the bare app that the worker's own web server has too (`ingest.py` passes
`-c python:bare_gunicorn`): the limit on a client's pauses, and with WORKER_WEB_CPUS each web process on
one of those CPUs, chosen alike."""

from __future__ import annotations

import functools
import os

from worker.domain.cpus import parse_cpu_list
from worker.http.server import bound_client_pauses, choose_cpu, pin_to_chosen_cpu

when_ready = bound_client_pauses
if cpus := os.environ.get("WORKER_WEB_CPUS"):
    pre_fork = functools.partial(choose_cpu, cpus=parse_cpu_list(cpus))
    post_fork = pin_to_chosen_cpu
