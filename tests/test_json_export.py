"""README "CSV and JSON exports": `tap-bolna --config config.json > calls.jsonl` writes every
call once, as Singer JSON lines (the seed's `--json` output)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import TYPE_CHECKING

from tests.conftest import API_KEY, FAST_PACE, tap_command
from tests.fake_api import FakeBolnaServer, World

if TYPE_CHECKING:
    from pathlib import Path


def test_json_lines_file_holds_every_call_of_the_account_once(tmp_path: Path) -> None:
    world = World.generate(seed=31, agents=2, calls=150, days=10)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        # The README's config.json: only the key (and here the fake's URL).
        (tmp_path / "config.json").write_text(
            json.dumps({"api_key": API_KEY, "api_url": api.url, **FAST_PACE})
        )
        with (tmp_path / "calls.jsonl").open("w") as calls_jsonl:
            finished = subprocess.run(
                tap_command(tmp_path / "config.json"),
                cwd=tmp_path,
                stdout=calls_jsonl,  # the shell's `> calls.jsonl`
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
                check=False,
            )
    assert finished.returncode == 0, finished.stderr[-3000:]

    messages = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    call_ids = Counter(
        message["record"]["id"]
        for message in messages
        if message["type"] == "RECORD" and message["stream"] == "executions"
    )
    assert set(call_ids) == set(world.executions)
    assert set(call_ids.values()) == {1}
    assert API_KEY not in (tmp_path / "calls.jsonl").read_text()
