"""The baseline the tap is compared with: a bare `requests` loop over every agent's executions.

Run as its own process, like the tap, so interpreter start-up counts on both sides:

    python benchmarks/bare_loop.py API_URL API_KEY PAGE_SIZE

Lists the agents, then pages through each agent's executions without dates until `has_more`
is false, decodes each page and writes every record as one JSON line to /dev/null. Prints
`records=N` on stderr so the caller can check both sides read the same calls.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import requests

TIMEOUT_SECONDS = 60


def main(argv: list[str]) -> int:
    """Fetch every page once; return 0 when all answers were 200."""
    api_url, api_key, page_size = argv[1].rstrip("/"), argv[2], int(argv[3])
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_key}"
    records = 0
    with Path(os.devnull).open("w", encoding="utf-8") as sink:
        listing = session.get(f"{api_url}/v2/agent/all", timeout=TIMEOUT_SECONDS)
        listing.raise_for_status()
        for agent in listing.json():
            url = f"{api_url}/v2/agent/{agent['id']}/executions"
            page_number = 1
            while True:
                params = {"page_number": page_number, "page_size": page_size}
                response = session.get(url, params=params, timeout=TIMEOUT_SECONDS)
                response.raise_for_status()
                body = response.json()
                sink.writelines(json.dumps(record) + "\n" for record in body["data"])
                records += len(body["data"])
                if not body.get("has_more"):
                    break
                page_number += 1
    print(f"records={records}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
