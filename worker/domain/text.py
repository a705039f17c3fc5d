"""Provider text as every database can store it.

Webhook JSON may carry what neither database takes: PostgreSQL refuses NUL in text, and a lone UTF-16
surrogate (JSON's "\\ud800") is not UTF-8 at all. Such a value once made the delivery fail for ever
after its 202 (display text) or answered 503 (a de-duplication key).
"""

from __future__ import annotations

import re


def is_storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(text: str) -> str:
    """`text` for display: NUL removed, a lone surrogate shown as U+FFFD (keys are hashed instead: fit_key)."""
    if is_storable(text):
        return text
    return _SURROGATE.sub("\ufffd", text.replace("\x00", ""))  # a str holds only lone ones: pairs are decoded


_SURROGATE = re.compile("[\ud800-\udfff]")
