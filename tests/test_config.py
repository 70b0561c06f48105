"""Settings as a user gives them to the `tap-bolna` command: bad ones stop it before any request,
environment variables work, and discovery and --about describe the tap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import typing as t

import pytest

from tests.conftest import API_KEY, REPO_ROOT, days_ago, run_tap_cli, tap_command

if t.TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import FakeAccount


@pytest.fixture
def max_workers() -> int:
    """Settings are checked before anything is fetched: parallel fetching plays no part here."""
    return 1


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param(
            {"page_size": 51},
            "51 is greater than the maximum of 50 in config['page_size']",
            id="page_size-51",
        ),
        pytest.param(
            {"page_size": 0},
            "0 is less than the minimum of 1 in config['page_size']",
            id="page_size-0",
        ),
        pytest.param(
            {"window_days": 8},
            "8 is greater than the maximum of 7 in config['window_days']",
            id="window_days-8",
        ),
        pytest.param(
            {"start_date": "yesterday-ish"},
            "start_date: 'yesterday-ish' is not an ISO 8601 date or timestamp",
            id="start_date-garbage",
        ),
        pytest.param(
            {"start_date": "2026-02-01", "end_date": "2026-01-01"},
            "end_date must be later than start_date",
            id="end_date-before-start_date",
        ),
        pytest.param(
            {"pagesize": 10},
            "Additional properties are not allowed ('pagesize' was unexpected)",
            id="misspelt-setting",
        ),
        pytest.param({"api_key": None}, "'api_key' is a required property", id="no-api_key"),
    ],
)
def test_bad_setting_stops_before_any_request(
    tmp_path: Path, small_account: FakeAccount, overrides: dict[str, t.Any], expected: str
) -> None:
    config = {
        key: value for key, value in small_account.config(**overrides).items() if value is not None
    }
    started = time.monotonic()
    result = run_tap_cli(tmp_path, config)
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert small_account.api.requests == []
    errors = [line for line in result.stderr.splitlines() if "| ERROR" in line]
    assert any(expected in line for line in errors), result.stderr
    assert result.messages == []  # not even a SCHEMA


def test_settings_from_environment_variables(
    tmp_path: Path, small_account: FakeAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in os.environ if name.startswith("TAP_BOLNA_")]:
        monkeypatch.delenv(name)
    env = {
        "TAP_BOLNA_API_KEY": API_KEY,
        "TAP_BOLNA_API_URL": small_account.api.url,
        "TAP_BOLNA_PAGE_SIZE": "7",
        "TAP_BOLNA_START_DATE": days_ago(11),
    }
    # An empty config file, then ENV: every setting comes from the environment.
    result = run_tap_cli(tmp_path, {}, "--config", "ENV", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(result.ids()) == sorted(small_account.world.executions)
    sizes = {
        r.query.get("page_size")
        for r in small_account.api.requests
        if r.path.endswith("/executions")
    }
    assert sizes == {"7"}
    assert API_KEY not in result.stderr


def test_discovery_lists_the_streams_with_keys_and_replication(
    tmp_path: Path, small_account: FakeAccount
) -> None:
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(small_account.config()))
    proc = subprocess.run(
        tap_command(config_path, "--discover"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert small_account.api.requests == []  # the catalog is static: discovery needs no request
    catalog = {stream["tap_stream_id"]: stream for stream in json.loads(proc.stdout)["streams"]}

    keys = {name: stream["key_properties"] for name, stream in catalog.items()}
    assert keys["agents"] == ["id"]
    assert keys["executions"] == ["id"]
    assert keys["batches"] == ["batch_id"]
    executions = catalog["executions"]
    assert executions["replication_key"] == "created_at"
    assert executions["replication_method"] == "INCREMENTAL"
    stream_metadata = next(m["metadata"] for m in executions["metadata"] if m["breadcrumb"] == [])
    assert stream_metadata["valid-replication-keys"] == ["created_at"]
    assert stream_metadata["selected"] is True  # on by default
    assert catalog["agents"]["replication_method"] == "FULL_TABLE"


def test_python_dash_m_about() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tap_bolna", "--about"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "Name: tap-bolna" in lines
    for setting in ("api_key", "start_date", "end_date", "page_size", "window_days"):
        assert setting in proc.stdout
