"""HTML pages (the approval page, the console): what a browser may do with them."""

from __future__ import annotations

from flask import Response

# No script, no framing (an approve button in a hidden frame is clickjacking), no caching (a decided page
# must not come back from history), and URLs (an approval token) never sent to another site as a referrer.
SAFE_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def safe_page(response: Response) -> Response:
    response.headers.update(SAFE_PAGE_HEADERS)
    return response
