"""Unit tests of how long a call in each status is followed (tap_bolna/statuses.py).

The statuses are written out here by hand from Bolna's API reference and issue 12, not
taken from the module's lists: a status dropped from (or moved between) them must fail.
"""

from __future__ import annotations

import pytest

from tap_bolna.statuses import Follow, follow_rule

UNTIL_FINAL = [
    "scheduled",
    "prepared",
    "queued",
    "rescheduled",
    "initiated",
    "ringing",
    "in-progress",
    "call-disconnected",
]
RETRY_HORIZON = ["no-answer", "busy", "failed", "error"]
NOT_FOLLOWED = ["completed", "canceled", "stopped", "balance-low"]


@pytest.mark.parametrize("status", UNTIL_FINAL)
def test_pending_statuses_are_followed_until_final(status: str) -> None:
    assert follow_rule(status) is Follow.UNTIL_FINAL


@pytest.mark.parametrize("status", RETRY_HORIZON)
def test_failed_statuses_are_followed_for_the_retry_horizon(status: str) -> None:
    assert follow_rule(status) is Follow.RETRY_HORIZON


@pytest.mark.parametrize("status", NOT_FOLLOWED)
def test_final_statuses_are_not_followed(status: str) -> None:
    assert follow_rule(status) is Follow.NOT


@pytest.mark.parametrize("status", ["voicemail", "Completed", "", None])
def test_a_status_the_tap_does_not_know_is_still_moving(status: str | None) -> None:
    # Bolna adds statuses; a call in one is followed rather than taken as final.
    assert follow_rule(status) is Follow.UNTIL_FINAL
