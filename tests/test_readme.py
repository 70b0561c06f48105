"""The README's settings table is the one `tap-bolna --about --format=markdown` prints."""

from __future__ import annotations

import subprocess

from tests.conftest import REPO_ROOT, tap_command


def test_readme_settings_table_matches_about() -> None:
    about = subprocess.run(
        [*tap_command(REPO_ROOT / "unused.json")[:1], "--about", "--format=markdown"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    table = about[about.index("| Setting |") : about.index("\nA full list")].strip()

    readme = (REPO_ROOT / "README.md").read_text()
    assert table in readme, "regenerate the README's settings table from --about"
    for setting in ("api_key", "max_workers", "pending_lookback_days"):
        assert f"| {setting} |" in readme
