"""The statuses of a Bolna call (execution): those it can still leave, and final ones.

Kept apart from `schemas.py`, which builds on the SDK, so that the bookmark rules in
`windows.py` (and the state inspector on top of them) load without it.
"""

from __future__ import annotations

# Statuses a call can still leave (later syncs must look at it again) and final ones.
PENDING_EXECUTION_STATUSES = (
    "scheduled",
    "queued",
    "rescheduled",
    "initiated",
    "ringing",
    "in-progress",
)
FINAL_EXECUTION_STATUSES = (
    "completed",
    "call-disconnected",
    "busy",
    "no-answer",
    "failed",
    "canceled",
    "balance-low",
    "stopped",
    "error",
)
EXECUTION_STATUSES = PENDING_EXECUTION_STATUSES + FINAL_EXECUTION_STATUSES
