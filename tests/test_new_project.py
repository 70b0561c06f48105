"""README "Add tap-bolna to your Meltano project", tried as a new user would: a brand-new
`meltano init` project adds tap-bolna from meltano-hub/tap-bolna.yml (its pip_url pointed at a
wheel built from this checkout), installs it, checks the key and loads a fake Bolna account with
target-jsonl. Nothing comes from Meltano Hub; packages come from the package index."""

from __future__ import annotations

import json
import subprocess
import typing as t

import pytest
import yaml

from tests.conftest import REPO_ROOT, days_ago
from tests.e2e_support import clean_environment, meltano
from tests.fake_api import FakeBolnaServer, World

if t.TYPE_CHECKING:
    from pathlib import Path

    from tests.e2e_support import Distributions

# Meltano and a wheel install: run once, on one Python (`make test`; `make e2e` runs only these).
pytestmark = pytest.mark.e2e

DEFINITION = REPO_ROOT / "meltano-hub" / "tap-bolna.yml"
API_KEY = "new-project-key-5ecret"
STATE_ID = "dev:tap-bolna-to-target-jsonl"
# The loader of the user's project: target-jsonl from the package index, defined in the project.
TARGET_JSONL = {
    "name": "target-jsonl",
    "namespace": "target_jsonl",
    "variant": "andyh1203",
    "pip_url": "target-jsonl>=0.1.4,<0.2",
    "executable": "target-jsonl",
    "settings": [
        {"name": "destination_path", "kind": "string", "value": "output"},
        {"name": "do_timestamp_file", "kind": "boolean", "value": False},
    ],
}
# The README's commands, in its order, as this test runs them (`<…>` stands for a value).
README_COMMANDS = [
    "meltano add tap-bolna --from-ref",
    "meltano select tap-bolna '*' '*'",
    "meltano select tap-bolna --exclude execution_logs '*'",
    "meltano install",
    "meltano config set tap-bolna api_key",
    "meltano config set tap-bolna start_date",
    "meltano config list tap-bolna",
    "meltano test tap-bolna",
    "meltano run tap-bolna target-jsonl",
]


def jsonl(path: Path) -> list[dict[str, t.Any]]:
    """The records target-jsonl wrote to one file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_readme_gives_the_commands_this_test_runs() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Add tap-bolna to your Meltano project\n")
    section = readme[start : readme.index("\n## ", start + 1)]
    positions = [section.find(command) for command in README_COMMANDS]
    assert -1 not in positions, [
        c for c, p in zip(README_COMMANDS, positions, strict=True) if p == -1
    ]
    assert positions == sorted(positions), "the README gives them in another order"
    # The three ways in: the repository URL, a local clone, a release.
    assert "raw.githubusercontent.com" in section
    assert "meltano-hub/tap-bolna.yml" in section
    assert "py3-none-any.whl" in section


def new_project_with_tap_bolna(tmp_path: Path, wheel: Path, env: dict[str, str]) -> Path:
    """`meltano init`, then the README's commands up to `meltano install`; checks meltano.yml."""
    meltano(tmp_path, "init", "analytics", "--no-usage-stats", env=env)
    project = tmp_path / "analytics"
    # The definition as committed, installed from the wheel instead of the repository URL.
    definition = yaml.safe_load(DEFINITION.read_text(encoding="utf-8"))
    definition["pip_url"] = str(wheel)
    tap_ref = tmp_path / "tap-bolna.yml"
    tap_ref.write_text(yaml.safe_dump(definition, allow_unicode=True), encoding="utf-8")
    loader_ref = tmp_path / "target-jsonl.yml"
    loader_ref.write_text(yaml.safe_dump(TARGET_JSONL), encoding="utf-8")

    meltano(project, "add", "tap-bolna", "--from-ref", str(tap_ref), "--no-install", env=env)
    meltano(project, "add", "target-jsonl", "--from-ref", str(loader_ref), "--no-install", env=env)
    # `meltano add --from-ref` keeps no `select`: Meltano would select execution_logs.
    meltano(project, "select", "tap-bolna", "*", "*", env=env)
    meltano(project, "select", "tap-bolna", "--exclude", "execution_logs", "*", env=env)
    installed = meltano(project, "install", env=env)
    assert "Installed 2/2 plugins" in installed.stdout + installed.stderr

    plugins = yaml.safe_load((project / "meltano.yml").read_text(encoding="utf-8"))["plugins"]
    assert set(plugins) == {"extractors", "loaders"}  # `meltano add extractor …` adds a utility
    (tap,) = plugins["extractors"]
    assert tap["pip_url"] == str(wheel)
    assert tap["namespace"] == definition["namespace"]
    assert tap["capabilities"] == definition["capabilities"]
    assert tap["settings_group_validation"] == definition["settings_group_validation"]
    assert tap["commands"] == definition["commands"]
    assert [s["name"] for s in tap["settings"]] == [s["name"] for s in definition["settings"]]
    assert [s["name"] for s in tap["settings"] if s.get("sensitive")] == ["api_key"]
    assert tap["select"] == ["*.*", "!execution_logs.*"]
    version = subprocess.run(
        [str(project / ".meltano/extractors/tap-bolna/venv/bin/tap-bolna"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert version.startswith(f"tap-bolna v{wheel.name.split('-')[1]}, ")
    return project


def test_a_new_meltano_project_adds_installs_and_runs_tap_bolna(
    distributions: Distributions, tmp_path: Path
) -> None:
    env = clean_environment()
    env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    project = new_project_with_tap_bolna(tmp_path, distributions.wheel, env)

    # Small, and all of it after start_date: no request needs an undated window.
    world = World.generate(seed=16, agents=2, calls=24, days=2)
    with FakeBolnaServer(world, api_key=API_KEY) as api:
        env["TAP_BOLNA_API_URL"] = api.url  # the fake API; a user keeps the default
        meltano(project, "config", "set", "tap-bolna", "api_key", API_KEY, env=env)
        meltano(project, "config", "set", "tap-bolna", "start_date", days_ago(3), env=env)
        assert f"TAP_BOLNA_API_KEY='{API_KEY}'" in (project / ".env").read_text()
        assert API_KEY not in (project / "meltano.yml").read_text()

        listed = meltano(project, "config", "list", "tap-bolna", env=env)
        output = listed.stdout + listed.stderr
        assert API_KEY not in output
        (key_line,) = [line for line in output.splitlines() if line.startswith("api_key ")]
        assert "current value: (redacted)" in key_line

        tested = meltano(project, "test", "tap-bolna", env=env)
        assert "Connection test passed" in tested.stderr
        assert "1 test(s) successful" in tested.stdout
        assert API_KEY not in tested.stdout + tested.stderr

        api.clear_requests()
        ran = meltano(project, "run", "tap-bolna", "target-jsonl", env=env)
        assert API_KEY not in ran.stdout + ran.stderr
        api.wait_until_idle()
        listings = [r for r in api.requests if r.path.endswith("/executions")]
        assert listings
        assert all("from" in r.query and "to" in r.query for r in listings)
        assert all(r.status == 200 for r in api.requests)

    output_dir = project / "output"
    calls = [record["id"] for record in jsonl(output_dir / "executions.jsonl")]
    assert sorted(calls) == sorted(world.executions), "every call arrives, once"
    agents = {record["id"] for record in jsonl(output_dir / "agents.jsonl")}
    assert agents == set(world.agent_ids)
    assert not (output_dir / "execution_logs.jsonl").exists()
    state = json.loads(meltano(project, "state", "get", STATE_ID, env=env).stdout)
    partitions = state["singer_state"]["bookmarks"]["executions"]["partitions"]
    assert {p["context"]["agent_id"] for p in partitions} == set(world.agent_ids)
