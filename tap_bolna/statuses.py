"""The statuses of a Bolna call (execution), and how long the tap follows a call in each.

Kept apart from `schemas.py`, which builds on the SDK, so that the bookmark rules in
`windows.py` (and the state inspector on top of them) load without it.

Bolna moves a call on after it looks done (`../shared/bolna-api/README.md`):
`call-disconnected` comes before `completed` fills in duration, cost and transcript, and
auto-retry puts a `no-answer`, `busy` or `failed` call back to `scheduled` under the same id.
"""

from __future__ import annotations

import enum

# Statuses a call is still moving through: followed until it leaves them (or grows too old).
# `prepared` is a batch call's first status (missing from the spec's enum).
PENDING_EXECUTION_STATUSES = (
    "scheduled",
    "prepared",
    "queued",
    "rescheduled",
    "initiated",
    "ringing",
    "in-progress",
    "call-disconnected",
)
# Final unless Bolna retries the call: followed for the retry horizon after `updated_at`.
RETRYABLE_EXECUTION_STATUSES = ("no-answer", "busy", "failed", "error")
# Final for good: the call is not looked at again.
TERMINAL_EXECUTION_STATUSES = ("completed", "canceled", "stopped", "balance-low")
# What the data of a call says now: no more calls, cost or transcript to come for it.
FINAL_EXECUTION_STATUSES = TERMINAL_EXECUTION_STATUSES + RETRYABLE_EXECUTION_STATUSES
EXECUTION_STATUSES = PENDING_EXECUTION_STATUSES + FINAL_EXECUTION_STATUSES


class Follow(enum.Enum):
    """How long a call in a given status is followed by later syncs."""

    UNTIL_FINAL = "until final"  # pending statuses, and any status the tap does not know
    RETRY_HORIZON = "retry horizon"  # no-answer, busy, failed, error
    NOT = "not followed"  # completed, canceled, stopped, balance-low


_TERMINAL = frozenset(TERMINAL_EXECUTION_STATUSES)
_RETRYABLE = frozenset(RETRYABLE_EXECUTION_STATUSES)


def follow_rule(status: str | None) -> Follow:
    """The rule for a status; one the tap does not know is still moving (Bolna adds statuses)."""
    if status in _TERMINAL:
        return Follow.NOT
    if status in _RETRYABLE:
        return Follow.RETRY_HORIZON
    return Follow.UNTIL_FINAL
