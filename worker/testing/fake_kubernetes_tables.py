"""Server-side printing for the fake Kubernetes API: the Table objects that `kubectl get` shows.

Columns as the API server prints Deployments and ReplicaSets (pkg/printers/internalversion), AGE as
k8s.io/apimachinery/pkg/util/duration.HumanDuration renders it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

_COLUMNS = {
    "deployments": ["Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"],
    "replicasets": ["Name", "Desired", "Current", "Ready", "Age", "Containers", "Images", "Selector"],
}
_WIDE = {"Containers", "Images", "Selector"}  # shown by `kubectl get -o wide` only


def table(
    request: Request, kind: str, items: list[dict[str, Any]], meta: dict[str, Any] | None = None
) -> Response | None:
    """A meta.k8s.io/v1 Table if the client asked for one (kubectl get does), else None."""
    if "as=Table" not in request.headers.get("Accept", ""):
        return None
    numbers = {"Up-to-date", "Available", "Desired", "Current"} | ({"Ready"} if kind == "replicasets" else set())
    columns = [
        {
            "name": c,
            "type": "integer" if c in numbers else "string",
            "format": "name" if c == "Name" else "",
            "description": c,
            "priority": 1 if c in _WIDE else 0,
        }
        for c in _COLUMNS[kind]
    ]
    rows = []
    for item in items:
        spec, status = item["spec"], item.get("status") or {}
        containers = spec["template"]["spec"].get("containers") or []
        selector = ",".join(f"{k}={v}" for k, v in sorted(spec["selector"].get("matchLabels", {}).items()))
        if kind == "deployments":
            ready = f"{status.get('readyReplicas', 0)}/{spec['replicas']}"
            counts = [ready, status.get("updatedReplicas", 0), status.get("availableReplicas", 0)]
        else:
            counts = [spec["replicas"], status.get("replicas", 0), status.get("readyReplicas", 0)]
        names = ",".join(c["name"] for c in containers)
        images = ",".join(c.get("image", "") for c in containers)
        cells = [
            item["metadata"]["name"],
            *counts,
            _age(item["metadata"]["creationTimestamp"]),
            names,
            images,
            selector,
        ]
        partial = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": item["metadata"]}
        rows.append({"cells": cells, "object": partial})
    document = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta or {},
        "columnDefinitions": columns,
        "rows": rows,
    }
    return Response(json.dumps(document), mimetype="application/json")


def _age(timestamp: str) -> str:
    """duration.HumanDuration, as the API server prints AGE."""
    seconds = int((datetime.now(UTC) - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds())
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d" if days < 365 * 2 else f"{days // 365}y"
