"""A fake Bolna API for tests, the offline demo and the benchmarks.

`World` holds agents and calls that can change while a run is in progress; `FakeBolnaServer`
serves it over real HTTP on 127.0.0.1, with switches to inject failures.
"""

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
    "FINAL_STATUSES",
    "MOVING_STATUSES",
    "PENDING_STATUSES",
    "RETRYABLE_FINAL_STATUSES",
    "TERMINAL_STATUSES",
    "UNDOCUMENTED_STATUSES",
    "FakeBolnaServer",
    "LoggedRequest",
    "World",
]
