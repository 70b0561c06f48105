"""The baseline the tap is compared with: a bare `requests` loop over every agent's executions.

Run as its own process, like the tap, so interpreter start-up counts on both sides:

    python benchmarks/bare_loop.py API_URL API_KEY PAGE_SIZE

Lists the agents, then walks each agent's history in the windows the tap's first sync walks
(no start_date): from the agent's `created_at` less one day to now, 7 days each, consecutive
windows sharing their edge, `from`/`to` in milliseconds as Bolna documents them. It pages
through each window until `has_more` is false, decodes each page and writes every record as
one JSON line to /dev/null; a call on a shared edge arrives in both windows and is written
once. Prints `records=N` on stderr so the caller can check both sides read the same calls.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import requests

TIMEOUT_SECONDS = 60
WINDOW = dt.timedelta(days=7)  # the most Bolna accepts between `from` and `to`
# The tap starts an agent's first sync this long before the agent's created_at.
AGENT_CREATED_MARGIN = dt.timedelta(days=1)


def timestamp(moment: dt.datetime) -> str:
    """`2026-05-07T00:00:00.000Z`: the form Bolna documents (and the tap sends)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def to_milliseconds(moment: dt.datetime) -> dt.datetime:
    """Round down to whole milliseconds, so a window's edges are exactly what is sent."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def windows(created_at: str, now: dt.datetime) -> list[tuple[str, str]]:
    """`from`/`to` pairs: 7-day windows from the agent's created_at less a day up to now."""
    start = to_milliseconds(dt.datetime.fromisoformat(created_at) - AGENT_CREATED_MARGIN)
    end = to_milliseconds(now)
    pairs = []
    while start < end:
        window_end = min(start + WINDOW, end)
        pairs.append((timestamp(start), timestamp(window_end)))
        start = window_end
    return pairs


def main(argv: list[str]) -> int:
    """Fetch every page once; return 0 when all answers were 200."""
    api_url, api_key, page_size = argv[1].rstrip("/"), argv[2], int(argv[3])
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_key}"
    records = 0
    with Path(os.devnull).open("w", encoding="utf-8") as sink:
        listing = session.get(f"{api_url}/v2/agent/all", timeout=TIMEOUT_SECONDS)
        listing.raise_for_status()
        now = dt.datetime.now(dt.timezone.utc)
        for agent in listing.json():
            url = f"{api_url}/v2/agent/{agent['id']}/executions"
            previous_window: set[str] = set()  # only a call on the shared edge is in both
            for created_from, created_to in windows(agent["created_at"], now):
                this_window: set[str] = set()
                page_number = 1
                while True:
                    params: dict[str, str | int] = {
                        "page_number": page_number,
                        "page_size": page_size,
                        "from": created_from,
                        "to": created_to,
                    }
                    response = session.get(url, params=params, timeout=TIMEOUT_SECONDS)
                    response.raise_for_status()
                    body = response.json()
                    for record in body["data"]:
                        this_window.add(record["id"])
                        if record["id"] not in previous_window:
                            sink.write(json.dumps(record) + "\n")
                            records += 1
                    if not body.get("has_more"):
                        break
                    page_number += 1
                previous_window = this_window
    print(f"records={records}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
