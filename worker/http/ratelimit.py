"""A per-address sliding-window counter of failed token look-ups (guessing links is throttled)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque


class FailureLimiter:
    def __init__(self, *, limit: int, window: float = 60.0, clock=time.monotonic):  # type: ignore[no-untyped-def]
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def blocked(self, address: str) -> bool:
        with self._lock:
            events = self._events[address]
            cutoff = self.clock() - self.window
            while events and events[0] < cutoff:
                events.popleft()
            return len(events) >= self.limit

    def failed(self, address: str) -> None:
        with self._lock:
            self._events[address].append(self.clock())
