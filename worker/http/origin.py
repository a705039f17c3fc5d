"""Cross-site requests: browsers say where a request comes from (Sec-Fetch-Site, Origin)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import request


def same_origin(public_url: str) -> bool:
    """False for a post a page on another site made a browser send (CSRF)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return True  # not a browser (or an old one): the caller's other checks still apply
    return origin in {f"{request.scheme}://{request.host}", _origin(public_url)}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
