"""The bare baseline: Flask + HMAC verification + pydantic validation, answering 202 without storing.

Served under the same gunicorn settings as the worker so that the ratio isolates durable storage.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from flask import Flask, jsonify, request

from worker.sources.pagerduty import Envelope

SECRET = os.environ.get("BENCH_SECRET", "bench-secret").encode()
app = Flask(__name__)


@app.post("/webhooks/pagerduty")
def receive():  # type: ignore[no-untyped-def]
    body = request.get_data()
    header = request.headers.get("X-PagerDuty-Signature", "")
    expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(p.strip()[3:], expected) for p in header.split(",") if p.strip().startswith("v1=")):
        return jsonify({"error": "bad signature"}), 401
    Envelope.model_validate_json(body)
    return jsonify({"accepted": True, "event_id": 0, "incident_id": None}), 202
