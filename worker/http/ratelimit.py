"""A per-address sliding-window counter of failed token look-ups (guessing links is throttled)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class FailureLimiter:
    # Addresses remembered at most: failures from ever new addresses (IPv6 gives a client many) must not
    # grow the process without bound. Past it, addresses with no failure in the window are forgotten
    # first, then the longest-remembered ones.
    MAX_ADDRESSES = 10_000

    def __init__(self, *, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, address: str) -> bool:
        with self._lock:
            events = self._events.get(address)  # a look-up alone remembers nothing
            if events is None:
                return False
            cutoff = self.clock() - self.window
            while events and events[0] < cutoff:
                events.popleft()
            if not events:
                del self._events[address]
            return len(events) >= self.limit

    def failed(self, address: str) -> None:
        with self._lock:
            if address not in self._events and len(self._events) >= self.MAX_ADDRESSES:
                self._forget()
            self._events.setdefault(address, deque()).append(self.clock())

    def __len__(self) -> int:
        return len(self._events)

    def _forget(self) -> None:
        cutoff = self.clock() - self.window
        for address in [a for a, events in self._events.items() if not events or events[-1] < cutoff]:
            del self._events[address]
        # Down to nine tenths at once, so that a flood of new addresses does not sweep at every failure.
        for address in list(self._events)[: max(0, len(self._events) - self.MAX_ADDRESSES * 9 // 10)]:
            del self._events[address]
