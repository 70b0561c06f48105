"""Settings as a user gives them to the `tap-bolna` command: bad ones stop it before any request,
environment variables work, and discovery and --about describe the tap."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import typing as t
from urllib.parse import urlparse

import pytest

from tap_bolna.tap import api_url_problem
from tap_bolna.windows import parse_timestamp
from tests.conftest import API_KEY, REPO_ROOT, days_ago, run_tap, run_tap_cli, tap_command

if t.TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import FakeAccount


def error_lines(stderr: str) -> list[str]:
    """The message part of every ERROR (or CRITICAL) log line."""
    return [
        line.split(" | ")[-1]
        for line in stderr.splitlines()
        if "| ERROR" in line or "| CRITICAL" in line
    ]


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
            {"max_requests_per_minute": 0},
            "0 is less than the minimum of 1 in config['max_requests_per_minute']",
            id="max_requests_per_minute-0",
        ),
        pytest.param(
            {"retry_horizon_hours": -1},
            "-1 is less than the minimum of 0 in config['retry_horizon_hours']",
            id="retry_horizon_hours-negative",
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
        pytest.param(
            {"api_key": ""},
            "api_key is empty: set it to your Bolna API key (dashboard → Developers)",
            id="empty-api_key",
        ),
        pytest.param(
            {"api_key": " \t "},
            "api_key is empty: set it to your Bolna API key (dashboard → Developers)",
            id="blank-api_key",
        ),
        pytest.param(
            {"api_key": 5_123_456_789},
            "api_key must be a string (the value given is not shown: it is secret)",
            id="api_key-not-a-string",
        ),
        pytest.param(
            {"api_url": "127.0.0.1:9"},
            "api_url: '127.0.0.1:9' is not an absolute http(s) URL (like https://api.bolna.ai)",
            id="api_url-no-scheme",
        ),
        pytest.param(
            {"api_url": "ftp://x"},
            "api_url: 'ftp://x' is not an absolute http(s) URL (like https://api.bolna.ai)",
            id="api_url-ftp",
        ),
        pytest.param(
            {"api_url": "https://"},
            "api_url: 'https://' is not an absolute http(s) URL (like https://api.bolna.ai)",
            id="api_url-no-host",
        ),
        pytest.param(
            {"api_url": "https://api.bolna.ai:https"},
            "api_url: 'https://api.bolna.ai:https' is not an absolute http(s) URL",
            id="api_url-bad-port",
        ),
        pytest.param(
            {"api_url": "http://api.bolna.ai"},
            "api_url: 'http://api.bolna.ai' would send the API key in clear text; use https:// "
            "(plain http:// is only allowed to 127.0.0.1, localhost or [::1])",
            id="api_url-plain-http-remote",
        ),
        pytest.param(
            {"api_url": "https://me:hunter2@api.bolna.ai"},
            "api_url must not hold a user name or password (the key goes in api_key)",
            id="api_url-with-password",
        ),
    ],
)
def test_bad_setting_stops_before_any_request(
    tmp_path: Path, small_account: FakeAccount, overrides: dict[str, t.Any], expected: str
) -> None:
    config = {
        key: value for key, value in small_account.config(**overrides).items() if value is not None
    }
    result = run_tap_cli(tmp_path, config)
    assert result.returncode == 1
    assert small_account.api.requests == []
    # One line, naming the setting, and no traceback.
    (line,) = error_lines(result.stderr)
    assert line.startswith(f"Config validation failed: {expected}"), result.stderr
    assert "Traceback" not in result.stderr
    assert result.messages == []  # not even a SCHEMA
    for secret in (API_KEY, "5123456789", "hunter2"):
        assert secret not in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # A missing colon: Python 3.13 words a trailing comma differently from 3.10-3.12.
        pytest.param(
            '{"api_key" "k"}',
            "is not JSON: Expecting ':' delimiter (line 1, column 12)",
            id="not-json",
        ),
        pytest.param("", "is not JSON: Expecting value (line 1, column 1)", id="empty"),
        pytest.param('["api_key"]', "holds an array, not a JSON object of settings", id="array"),
        pytest.param('"api_key"', "holds a string, not a JSON object of settings", id="string"),
        pytest.param(None, "not found", id="missing"),
    ],
)
def test_unusable_config_file_is_named_in_one_line(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    config_path = tmp_path / "bad.json"
    if content is not None:
        config_path.write_text(content)
    proc = subprocess.run(
        tap_command(config_path), capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1
    assert error_lines(proc.stderr) == [f"Config file {config_path} {expected}"], proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "url",
    [
        "https://api.bolna.ai",
        "https://api.bolna.ai/",
        "https://eu.api.bolna.ai:8443",
        "http://127.0.0.1:8080",
        "http://127.8.9.10:8080",
        "http://localhost:8080",
        "http://[::1]:8080",
    ],
)
def test_api_urls_allowed(url: str) -> None:
    assert api_url_problem(url) is None


def test_plain_http_to_this_machine_reaches_the_api(small_account: FakeAccount) -> None:
    port = urlparse(small_account.api.url).port
    result = run_tap(
        small_account.config(api_url=f"http://localhost:{port}", start_date=days_ago(11))
    )
    assert sorted(result.ids()) == sorted(small_account.world.executions)


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


# ---------------------------------------------------------------- --test


def test_connection_test_with_a_good_key_says_so_in_one_line(
    tmp_path: Path, small_account: FakeAccount
) -> None:
    api, world = small_account.api, small_account.world
    first = world.agent_ids[0]
    result = run_tap_cli(tmp_path, small_account.config(), "--test")
    assert result.returncode == 0, result.stderr
    assert [request.path for request in api.requests] == [
        "/v2/agent/all",
        f"/v2/agent/{first}/executions",
    ]
    # Bolna refuses an executions request without a date range: the last 7 days.
    query = api.requests[1].query
    start, end = parse_timestamp(query["from"]), parse_timestamp(query["to"])
    assert dt.timedelta(days=7) - dt.timedelta(seconds=1) <= end - start <= dt.timedelta(days=7)
    calls = sum(
        call["agent_id"] == first and start <= parse_timestamp(call["created_at"]) <= end
        for call in world.executions.values()
    )
    assert 0 < calls < sum(call["agent_id"] == first for call in world.executions.values())
    verdicts = [line for line in result.stderr.splitlines() if "Connection test" in line]
    assert [line.split(" | ")[-1] for line in verdicts] == [
        (
            f"Connection test passed: {api.url} accepted the API key; 2 agents; "
            f"agent {first} has {calls} calls in the last 7 days (2 requests)"
        )
    ]
    assert "| INFO" in verdicts[0]
    assert error_lines(result.stderr) == []
    assert "| WARNING" not in result.stderr
    assert result.raw_stdout == ""  # a check, not a sync: no Singer messages
    assert API_KEY not in result.stderr


def test_connection_test_with_a_bad_key_fails_in_one_line(
    tmp_path: Path, small_account: FakeAccount
) -> None:
    wrong_key = "wrong-key-7f3a-not-the-real-one"
    result = run_tap_cli(tmp_path, small_account.config(api_key=wrong_key), "--test")
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        "Bolna rejected the API key (HTTP 403): Invalid or expired API key"
    ]
    assert "Connection test passed" not in result.stderr
    assert "Traceback" not in result.stderr
    assert len(small_account.api.requests) == 1
    for secret in (wrong_key, API_KEY):
        assert secret not in result.stderr


def test_connection_test_checks_the_settings_first(
    tmp_path: Path, small_account: FakeAccount
) -> None:
    # The SDK's --test would end in a ConfigValidationError traceback here.
    result = run_tap_cli(tmp_path, small_account.config(page_size=0), "--test")
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        "Config validation failed: 0 is less than the minimum of 1 in config['page_size']"
    ]
    assert "Traceback" not in result.stderr
    assert small_account.api.requests == []


def test_schema_test_is_the_sdks(tmp_path: Path, small_account: FakeAccount) -> None:
    result = run_tap_cli(tmp_path, small_account.config(), "--test=schema")
    assert result.returncode == 0, result.stderr
    schemas = {m["stream"] for m in result.messages if m["type"] == "SCHEMA"}
    assert {"agents", "executions", "batches"} <= schemas
    assert small_account.api.requests == []
