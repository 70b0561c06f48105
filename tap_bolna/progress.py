"""What a person reads during a sync: which agent, how far, how much is left, and a summary.

The SDK's own lines (METRIC, "Beginning … sync") say nothing of agents or windows; a backfill
at real latency runs for hours. One INFO line per completed window, one at least every
`HEARTBEAT_SECONDS` inside a long window, one per agent at its end and one for the sync.
"""

from __future__ import annotations

import threading
import time
import typing as t
from dataclasses import dataclass

if t.TYPE_CHECKING:
    import logging

    from tap_bolna.windows import Window

# The longest a long window stays silent.
HEARTBEAT_SECONDS = 30.0


class SyncStats:
    """Counters shared by every stream and worker of one sync (thread-safe)."""

    def __init__(self) -> None:
        """Start counting now."""
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.calls = 0
        self.agents = 0

    def count_request(self) -> None:
        """One HTTP attempt was sent (retries included)."""
        with self._lock:
            self.requests += 1

    def count_retry(self) -> None:
        """One request is about to be retried."""
        with self._lock:
            self.retries += 1

    def count_agent(self, calls: int) -> None:
        """One agent's calls were synced."""
        with self._lock:
            self.agents += 1
            self.calls += calls

    def summary(self) -> str:
        """The sync's last line."""
        seconds = time.monotonic() - self.started
        return (
            f"Sync done: {self.calls:,} calls from {self.agents:,} agent(s), "
            f"{self.requests:,} requests ({self.retries:,} retried), in {seconds:.1f} s."
        )


@dataclass
class AgentProgress:
    """The progress lines of one agent's sync."""

    logger: logging.Logger
    agent: str  # "name (id)"
    windows: int
    clock: t.Callable[[], float] = time.monotonic
    emitted: int = 0
    done: int = 0
    _last_line: float = 0.0

    def __post_init__(self) -> None:
        """The first heartbeat comes a full interval after the start."""
        self._last_line = self.clock()

    def record_emitted(self) -> None:
        """Count one emitted call."""
        self.emitted += 1

    def heartbeat(self, window: Window, pages: int) -> None:
        """Say where a long window is, at most every `HEARTBEAT_SECONDS`."""
        now = self.clock()
        if now - self._last_line < HEARTBEAT_SECONDS:
            return
        self._last_line = now
        self.logger.info(
            "Agent %s: reading %s, %d pages so far; %s calls emitted, window %d of %d.",
            self.agent,
            describe(window),
            pages,
            f"{self.emitted:,}",
            self.done + 1,
            self.windows,
        )

    def window_done(self, window: Window) -> None:
        """One line per completed window."""
        self.done += 1
        self._last_line = self.clock()
        self.logger.info(
            "Agent %s: %s done; %s calls emitted so far, window %d of %d.",
            self.agent,
            describe(window),
            f"{self.emitted:,}",
            self.done,
            self.windows,
        )

    def agent_done(self, *, new: int, changed: int, pending: int) -> None:
        """The agent's summary line."""
        self.logger.info(
            "Agent %s: %s new calls, %s changed since emitted (status or data), "
            "%s calls still followed (they can still change).",
            self.agent,
            f"{new:,}",
            f"{changed:,}",
            f"{pending:,}",
        )


def describe(window: Window) -> str:
    """A window as a person reads it: `2026-11-01 08:00 .. 2026-11-08 08:00 UTC`."""
    kind = "re-check " if window.recheck else ""
    start = window.start.strftime("%Y-%m-%d %H:%M")
    end = window.end.strftime("%Y-%m-%d %H:%M")
    return f"{kind}window {start} .. {end} UTC"
