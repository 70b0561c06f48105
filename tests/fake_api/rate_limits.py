"""Bolna's per-organisation request limits, as its "Rate Limiting" page documents them.

Two route groups: "agent" (paths under `/v2/agent/`, i.e. executions, one agent and the agent
list, plus `/call`) allows 500 requests a minute, "default" (every other path) 1,000. A request
over the limit is refused with 429 and, unless a test asks for one, no Retry-After header.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

RATE_LIMIT_GROUPS = ("agent", "default")
WindowMode = Literal["sliding", "fixed"]


@dataclass(frozen=True)
class RateLimit:
    """`requests` admitted per `per_seconds`, of which `used_by_others` go to other clients.

    `used_by_others` stands for the customer's own apps sharing the organisation's limit,
    modelled as spread evenly: the client under test gets `requests - used_by_others` per
    window. `mode` "sliding" counts the requests admitted in the last `per_seconds`; "fixed"
    resets the count at each multiple of `per_seconds` on the limiter's clock. `retry_after`
    (seconds or an HTTP-date) is sent as Retry-After on refusals; None sends no header.
    """

    requests: int
    per_seconds: float = 60.0
    used_by_others: int = 0
    mode: WindowMode = "sliding"
    retry_after: str | None = None

    def __post_init__(self) -> None:
        """Refuse settings that describe no limit at all."""
        if self.requests < 0 or not 0 <= self.used_by_others <= self.requests:
            msg = "need requests >= 0 and 0 <= used_by_others <= requests"
            raise ValueError(msg)
        if not self.per_seconds > 0:
            msg = "per_seconds must be positive"
            raise ValueError(msg)
        if self.mode not in ("sliding", "fixed"):
            msg = f"mode must be 'sliding' or 'fixed', not {self.mode!r}"
            raise ValueError(msg)

    @property
    def capacity(self) -> int:
        """Requests left to the client under test in each window."""
        return self.requests - self.used_by_others

    def refusal_message(self) -> str:
        """The 429 body's message."""
        return (
            f"Rate limit exceeded: {self.requests} requests per {self.per_seconds:g} seconds "
            "for this organisation"
        )


DEFAULT_RATE_LIMITS: Mapping[str, RateLimit] = MappingProxyType(
    {"agent": RateLimit(500, 60.0), "default": RateLimit(1000, 60.0)}
)


def rate_limit_group(path: str) -> str:
    """The route group whose limit a request path counts against."""
    if path.startswith("/v2/agent/") or path.rstrip("/") == "/call":
        return "agent"
    return "default"


@dataclass
class _Window:
    """Requests admitted for one organisation and group: their times, or a fixed-window count."""

    admitted_at: deque[float] = field(default_factory=deque)
    fixed_index: int = -1
    fixed_count: int = 0

    def admit(self, limit: RateLimit, now: float) -> bool:
        if limit.mode == "fixed":
            index = math.floor(now / limit.per_seconds)
            if index != self.fixed_index:
                self.fixed_index, self.fixed_count = index, 0
            if self.fixed_count >= limit.capacity:
                return False
            self.fixed_count += 1
            return True
        horizon = now - limit.per_seconds
        while self.admitted_at and self.admitted_at[0] <= horizon:
            self.admitted_at.popleft()
        if len(self.admitted_at) >= limit.capacity:
            return False
        self.admitted_at.append(now)
        return True


@dataclass
class _Counts:
    admitted: int = 0
    refused: int = 0


class RateLimiter:
    """Admits or refuses requests per (organisation, route group); thread-safe.

    Refused requests do not count against the window: Bolna does not document whether its
    refusals count, and counting them would lock out for good a client that retries faster
    than the limit, so here a client is admitted again as soon as the window has room.
    Admitted and refused requests are counted per group, over every organisation.
    """

    def __init__(
        self,
        limits: Mapping[str, RateLimit | None] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start with `limits` per group (a missing group, or None, has no limit)."""
        self.clock = clock
        self._limits: dict[str, RateLimit | None] = dict.fromkeys(RATE_LIMIT_GROUPS)
        for group, limit in (limits or {}).items():
            self._limits[_known_group(group)] = limit
        self._windows: dict[tuple[str, str], _Window] = {}
        self._counts = {group: _Counts() for group in RATE_LIMIT_GROUPS}
        self._lock = threading.Lock()

    @property
    def limits(self) -> dict[str, RateLimit | None]:
        """The limit of each group (None: no limit)."""
        with self._lock:
            return dict(self._limits)

    def set_limit(self, group: str, limit: RateLimit | None) -> None:
        """Replace a group's limit and forget the requests its windows had admitted."""
        group = _known_group(group)
        with self._lock:
            self._limits[group] = limit
            self._windows = {
                key: window for key, window in self._windows.items() if key[1] != group
            }

    def admit(self, organisation: str, path: str) -> RateLimit | None:
        """Count one request in; return None if admitted, else the limit that refuses it."""
        group = rate_limit_group(path)
        with self._lock:
            limit = self._limits[group]
            counts = self._counts[group]
            if limit is not None:
                window = self._windows.setdefault((organisation, group), _Window())
                if not window.admit(limit, self.clock()):
                    counts.refused += 1
                    return limit
            counts.admitted += 1
            return None

    def counts(self) -> dict[str, dict[str, int]]:
        """Requests admitted and refused per group since start or `reset_counts`."""
        with self._lock:
            return {
                group: {"admitted": counts.admitted, "refused": counts.refused}
                for group, counts in self._counts.items()
            }

    def reset_counts(self) -> None:
        """Start the admitted/refused counts again from zero (windows are kept)."""
        with self._lock:
            self._counts = {group: _Counts() for group in RATE_LIMIT_GROUPS}


def _known_group(group: str) -> str:
    if group not in RATE_LIMIT_GROUPS:
        msg = f"rate limit group must be one of {', '.join(RATE_LIMIT_GROUPS)}, not {group!r}"
        raise ValueError(msg)
    return group
