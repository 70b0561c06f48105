"""`tap-bolna-state` on state written by real syncs against the fake API, and on garbage."""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
import sys
import typing as t
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tap_bolna import state as inspector
from tap_bolna.tap import TapBolna
from tap_bolna.windows import (
    LookBack,
    format_timestamp,
    parse_timestamp,
)
from tests.conftest import API_KEY, make_config, partitions, run_tap
from tests.fake_api import FakeBolnaServer, World

COMMAND = str(Path(sys.executable).with_name("tap-bolna-state"))
DAY = dt.timedelta(days=1)
ANOTHER_TAPS_STATE = {
    "bookmarks": {
        "orders": {"replication_key": "updated_at", "replication_key_value": "2026-01-01T00:00:00Z"}
    }
}
BAD_TIMESTAMP_STATE = {
    "bookmarks": {
        "executions": {
            "partitions": [
                {
                    "context": {"agent_id": "a1"},
                    "replication_key": "created_at",
                    "replication_key_value": "last tuesday",
                }
            ]
        }
    }
}


@dataclass
class SyncedAccount:
    """A fake account after one full sync, the state it left, and the time the tests plan at."""

    world: World
    api: FakeBolnaServer
    state: dict[str, t.Any]
    now: dt.datetime

    @property
    def now_option(self) -> str:
        return format_timestamp(self.now)


@pytest.fixture(scope="module")
def synced() -> t.Iterator[SyncedAccount]:
    """3 agents, a third of the last 10 days' calls pending, 2 calls pending for 20-30 days."""
    world = World.generate(
        seed=41, agents=3, calls=300, days=20, pending_fraction=0.3, old_pending=2
    )
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        # Followed: the fake's pending calls (no retry horizon), for 14 days.
        config = make_config(api, retry_horizon_hours=0, pending_lookback_days=14)
        state = run_tap(config).final_state
        yield SyncedAccount(world, api, state, dt.datetime.now(dt.timezone.utc))


def run_command(
    *args: str, stdin: str | bytes | None = None, module: bool = False
) -> subprocess.CompletedProcess[str]:
    """The installed console script (or `python -m tap_bolna.state`), as a user runs it."""
    command = [sys.executable, "-m", "tap_bolna.state"] if module else [COMMAND]
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [*command, *args], input=data or b"", capture_output=True, timeout=30, check=False
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def rows_of(synced: SyncedAccount, *args: str, state: object = None) -> list[dict[str, t.Any]]:
    """The inspector's --json rows for a state (the sync's by default), piped to the command."""
    document = synced.state if state is None else state
    out = inspector_output(["--json", "--now", synced.now_option, *args], json.dumps(document))
    return t.cast("list[dict[str, t.Any]]", json.loads(out))


def inspector_output(argv: list[str], stdin: str) -> str:
    """What `main` prints for `argv` with `stdin` piped in (it must exit 0)."""
    proc = run_command(*argv, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def world_pending(world: World, agent_id: str) -> dict[str, dict[str, t.Any]]:
    """The agent's calls the fake API still has in a pending status."""
    pending = world.pending_ids()
    return {
        call_id: call
        for call_id, call in world.executions.items()
        if call_id in pending and call["agent_id"] == agent_id
    }


def test_rows_say_what_the_state_says_and_the_world_holds(synced: SyncedAccount) -> None:
    rows = rows_of(synced, "--pending-lookback-days", "14")
    horizon = synced.now - 14 * DAY

    assert [row["agent_id"] for row in rows] == synced.world.agent_ids
    by_agent = partitions(synced.state)
    for row in rows:
        partition = by_agent[row["agent_id"]]
        pending = world_pending(synced.world, row["agent_id"])
        followed = {
            call_id: call
            for call_id, call in pending.items()
            if parse_timestamp(call["created_at"]) >= horizon
        }
        assert row["pending_calls"] == dict(Counter(c["status"] for c in followed.values()))
        assert row["pending_total"] == len(followed) > 0
        assert row["pending_too_old"] == len(pending) - len(followed)
        # The state follows exactly the calls the world still has pending.
        assert set(partition["pending_calls"]) == set(pending)
        assert row["oldest_pending_created_at"] == format_timestamp(
            min(parse_timestamp(c["created_at"]) for c in followed.values())
        )
        assert row["synced_through"] == partition["replication_key_value"]
        assert row["lookback_calls"] == len(partition["recent_calls"])
        assert moment(row["next_sync_starts"]) == next_start(synced, row["agent_id"], minutes=60)
        ago = synced.now - parse_timestamp(partition["replication_key_value"])
        assert row["synced_seconds_ago"] == round(ago.total_seconds())
    assert sum(row["pending_too_old"] for row in rows) == 2  # the world's old_pending


def moment(timestamp: str) -> dt.datetime:
    """An ISO 8601 timestamp ("...Z" or "+00:00") as a datetime, parsed here, not by the tap."""
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def to_the_millisecond(moment: dt.datetime) -> dt.datetime:
    """What the API's timestamps keep of a moment (Bolna's format has milliseconds)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def next_start(synced: SyncedAccount, agent_id: str, *, minutes: int) -> dt.datetime:
    """Where the next sync of an agent starts, worked out by hand (README, "How incremental
    sync works"): `minutes` before where the last one read to, or earlier, at the agent's
    newest call in the fake (calls listed late are created after it), but never more than
    a week before now. Not the tap's resume_from, which the inspector calls."""
    synced_through = moment(partitions(synced.state)[agent_id]["replication_key_value"])
    newest = max(
        moment(call["created_at"])
        for call in synced.world.executions.values()
        if call["agent_id"] == agent_id
    )
    reach_back = max(to_the_millisecond(newest), to_the_millisecond(synced.now) - 7 * DAY)
    return min(synced_through - dt.timedelta(minutes=minutes), reach_back)


def forward_walk_start(requests: list[t.Any], agent_id: str) -> str:
    """Where a sync's forward walk started: follow its windows back from the last one."""
    windows = {
        (r.query["from"], r.query["to"])
        for r in requests
        if r.path == f"/v2/agent/{agent_id}/executions" and "from" in r.query
    }
    start, _ = max(windows, key=lambda window: window[1])
    while any(end == start for _, end in windows):
        start = next(begin for begin, end in windows if end == start)
    return start


def test_the_next_sync_starts_where_it_says_and_drops_the_calls_too_old(
    synced: SyncedAccount,
) -> None:
    rows = rows_of(synced)
    synced.api.clear_requests()

    # A copy: the tap updates the state it is given in place.
    state = copy.deepcopy(synced.state)
    after = partitions(run_tap(make_config(synced.api), state=state).final_state)

    for row in rows:
        agent_id = row["agent_id"]
        assert forward_walk_start(synced.api.requests, agent_id) == row["next_sync_starts"]
        still_pending = Counter(
            call["status"] for call in after[agent_id]["pending_calls"].values()
        )
        assert dict(still_pending) == row["pending_calls"]


def test_table_from_stdin_in_meltanos_wrapper(synced: SyncedAccount) -> None:
    wrapped = json.dumps({"singer_state": synced.state})
    proc = run_command("--now", synced.now_option, "--pending-lookback-days", "14", stdin=wrapped)
    rows = rows_of(synced, "--pending-lookback-days", "14")

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    title, header, *lines, total = proc.stdout.splitlines()
    assert "lookback_minutes=60, pending_lookback_days=14" in title
    assert header.split()[:3] == ["AGENT", "SYNCED", "THROUGH"]
    assert [line.split()[0] for line in lines] == [row["agent_id"] for row in rows]
    for line, row in zip(lines, rows, strict=True):
        assert inspector.describe_counts(row["pending_calls"]) in line
        # Aligned: each agent's next start sits under its heading.
        next_start = parse_timestamp(row["next_sync_starts"]).strftime("%Y-%m-%d %H:%M")
        assert line.index(next_start) == header.index("NEXT SYNC FROM")
        assert line.endswith(next_start)
    followed = sum(row["pending_total"] for row in rows)
    assert total.startswith(f"Total: 3 agents; {followed} calls followed (")
    assert "2 too old to follow" in total


def test_file_argument_json_and_python_dash_m_agree(synced: SyncedAccount, tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps({"singer_state": synced.state}))

    from_file = run_command("--json", "--now", synced.now_option, str(state_file))
    from_module = run_command("--json", "--now", synced.now_option, str(state_file), module=True)

    assert from_file.returncode == from_module.returncode == 0
    assert json.loads(from_file.stdout) == json.loads(from_module.stdout) == rows_of(synced)


def test_config_file_settings_and_options_that_override_them(
    synced: SyncedAccount, tmp_path: Path
) -> None:
    start_date = synced.now - dt.timedelta(hours=2)
    config_file = tmp_path / "config.json"
    config = {
        **make_config(synced.api),
        "lookback_minutes": 0,
        "pending_lookback_days": 30,
        "start_date": start_date.isoformat(),
    }
    config_file.write_text(json.dumps(config))

    proc = run_command(
        "--config",
        str(config_file),
        "--now",
        synced.now_option,
        "--json",
        stdin=json.dumps(synced.state),
    )
    overridden = rows_of(synced, "--config", str(config_file), "--lookback-minutes", "5")

    assert API_KEY not in proc.stdout + proc.stderr
    for row, row_5 in zip(json.loads(proc.stdout), overridden, strict=True):
        for found, minutes in ((row, 0), (row_5, 5)):
            start = next_start(synced, row["agent_id"], minutes=minutes)
            assert moment(found["next_sync_starts"]) == max(start, to_the_millisecond(start_date))
        assert row["pending_too_old"] == 0  # followed for 30 days, the 20-30 day old ones too
    assert any(row["next_sync_starts"] == format_timestamp(start_date) for row in overridden)


def test_state_from_before_the_look_back(synced: SyncedAccount) -> None:
    old_state = json.loads(json.dumps(synced.state))
    for partition in old_state["bookmarks"]["executions"]["partitions"]:
        del partition["recent_calls"], partition["newest_created_at"]
        for call in partition["pending_calls"].values():
            del call["updated_at"]

    rows = rows_of(synced, state=old_state)
    table = inspector_output(["--now", synced.now_option], json.dumps(old_state))

    assert [row["lookback_calls"] for row in rows] == [None, None, None]
    assert [row["pending_calls"] for row in rows] == [
        row["pending_calls"] for row in rows_of(synced)
    ]
    for line in table.splitlines()[2:-1]:
        assert "  -  " in line  # no look-back count: not 0, unknown


def test_a_partition_never_synced_starts_from_the_agents_creation_or_start_date(
    tmp_path: Path,
) -> None:
    state = {"bookmarks": {"executions": {"partitions": [{"context": {"agent_id": "a1"}}]}}}
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"api_key": API_KEY, "start_date": "2026-03-01"}))

    plain = run_command("--json", stdin=json.dumps(state))
    with_start = run_command("--json", "--config", str(config_file), stdin=json.dumps(state))
    table = run_command(stdin=json.dumps(state))

    assert json.loads(plain.stdout)[0]["next_sync_starts"] is None
    assert json.loads(plain.stdout)[0]["synced_through"] is None
    assert json.loads(with_start.stdout)[0]["next_sync_starts"] == "2026-03-01T00:00:00.000Z"
    assert table.stdout.splitlines()[2].split()[:2] == ["a1", "never"]
    assert table.stdout.splitlines()[2].endswith("agent created")


@pytest.mark.parametrize(
    ("document", "says"),
    [
        pytest.param(b"Traceback (most recent call last):", "not JSON", id="not-json"),
        pytest.param(b"\x00\x9f\xff binary", "not", id="binary"),
        pytest.param(b"[1, 2]", "a JSON array", id="json-list"),
        pytest.param(b'{"singer_state": "x"}', "a JSON string", id="wrapper-of-a-string"),
        pytest.param(
            json.dumps(ANOTHER_TAPS_STATE).encode(),
            "no bookmarks for tap-bolna's executions stream (it has: orders)",
            id="another-taps-state",
        ),
        pytest.param(
            b'{"bookmarks": {"executions": {"replication_key_value": "2026-01-01"}}}',
            "no partitions",
            id="executions-without-partitions",
        ),
        pytest.param(
            b'{"bookmarks": {"executions": {"partitions": [{"context": {"id": 1}}]}}}',
            "no context.agent_id",
            id="partition-of-another-stream",
        ),
        pytest.param(
            json.dumps(BAD_TIMESTAMP_STATE).encode(),
            "agent a1: the bookmark cannot be read",
            id="bad-timestamp",
        ),
        pytest.param(b'{"type": "STATE"}', "no bookmarks", id="not-a-state"),
    ],
)
def test_input_that_is_not_the_taps_state_exits_2_with_one_line(document: bytes, says: str) -> None:
    proc = run_command(stdin=document)

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("tap-bolna-state: ")
    assert says in proc.stderr


def test_unusable_files_and_options_exit_2_with_one_line(tmp_path: Path) -> None:
    not_json = tmp_path / "config.json"
    not_json.write_text(f'{{"api_key": "{API_KEY}", ')
    bad_setting = tmp_path / "bad.json"
    bad_setting.write_text(json.dumps({"api_key": API_KEY, "lookback_minutes": "sixty"}))

    for args, says in [
        ((str(tmp_path / "missing.json"),), "missing.json not found"),
        (("--config", str(not_json)), "is not JSON"),
        (("--config", str(bad_setting)), "lookback_minutes must be a whole number"),
        (("--now", "soon"), "--now is not an ISO 8601 timestamp"),
        (("--pending-lookback-days", "0"), "--pending-lookback-days must be 1 or more"),
    ]:
        proc = run_command(*args, stdin="{}")
        assert proc.returncode == 2, args
        assert proc.stderr.splitlines() == [proc.stderr.strip()], args
        assert says in proc.stderr, args
        assert API_KEY not in proc.stderr


@pytest.mark.parametrize("document", ["{}", '{"singer_state": {}}', '{"bookmarks": {}}'])
def test_an_empty_state_says_never_synced(document: str) -> None:
    table = run_command(stdin=document)
    machine = run_command("--json", stdin=document)

    assert table.returncode == machine.returncode == 0
    (line,) = table.stdout.splitlines()
    assert line.startswith("No agent has been synced yet: the state holds no executions bookmarks")
    assert "a state id it does not know" in line
    assert json.loads(machine.stdout) == []
    assert "never" not in machine.stdout


def test_defaults_are_the_taps_setting_defaults() -> None:
    settings = TapBolna.config_jsonschema["properties"]
    help_text = inspector.parser().format_help()

    assert settings["lookback_minutes"]["default"] == LookBack().minutes
    assert settings["pending_lookback_days"]["default"] == LookBack().pending_days
    assert f"else {settings['lookback_minutes']['default']})" in " ".join(help_text.split())


def test_the_inspector_starts_without_the_sdk() -> None:
    code = "import sys, tap_bolna.state; print(sorted(m for m in sys.modules if 'singer' in m))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (42, "42 s ago"),
        (5 * 60 + 59, "5 min ago"),
        (2 * 3600 + 5 * 60, "2 h 5 min ago"),
        (3 * 86400 + 4 * 3600 + 59, "3 d 4 h ago"),
        (-120, "2 min from now"),
    ],
)
def test_how_long_ago(seconds: int, said: str) -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert inspector.describe_age(now - dt.timedelta(seconds=seconds), now) == said


def test_the_readme_shows_every_json_field(synced: SyncedAccount) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### 4. See how far each sync got") : readme.index("### 5.")]

    assert "meltano state get dev:tap-bolna-to-target-postgres | uv run tap-bolna-state" in section
    for field in rows_of(synced)[0]:
        assert f'"{field}": ' in section, field
