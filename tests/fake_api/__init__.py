"""A fake Bolna API for tests, the offline demo and the benchmarks.

`World` holds agents and calls that can change while a run is in progress; `FakeBolnaServer`
serves it over real HTTP on 127.0.0.1, with the live API's rules (dates on every executions
request, per-organisation rate limits) and switches to inject failures.
"""

from tests.fake_api.rate_limits import DEFAULT_RATE_LIMITS, RateLimit
from tests.fake_api.server import FakeBolnaServer, LoggedRequest
from tests.fake_api.world import (
    FINAL_STATUSES,
    MOVING_STATUSES,
    PENDING_STATUSES,
    RETRYABLE_FINAL_STATUSES,
    TERMINAL_STATUSES,
    UNDOCUMENTED_STATUSES,
    World,
)

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "FINAL_STATUSES",
    "MOVING_STATUSES",
    "PENDING_STATUSES",
    "RETRYABLE_FINAL_STATUSES",
    "TERMINAL_STATUSES",
    "UNDOCUMENTED_STATUSES",
    "FakeBolnaServer",
    "LoggedRequest",
    "RateLimit",
    "World",
]
