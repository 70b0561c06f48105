"""A release is a real artefact (README "Releases"): `uv build` makes an sdist and a wheel of the
version in pyproject.toml, the wheel installs with plain pip on every claimed Python and says its
version, and CHANGELOG.md and the README keep up with the version."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import typing as t
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from tests.conftest import REPO_ROOT
from tests.e2e_support import COMMAND_TIMEOUT
from tests.pythons import claimed_versions, find_python, requires_python

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

if t.TYPE_CHECKING:
    from tests.e2e_support import Distributions

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
VERSION = PROJECT["version"]
REPOSITORY = PROJECT["urls"]["Repository"]


def readme_section(title: str) -> str:
    """A `## title` section of the README, up to the next `## `."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(f"\n## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


# --------------------------------------------------------------------------- the version, once


def test_the_version_is_said_in_pyproject_only() -> None:
    """--version reads the package metadata; no module spells the version out."""
    printed = subprocess.run(
        [str(Path(sys.executable).with_name("tap-bolna")), "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed.startswith(f"tap-bolna v{VERSION}, Meltano SDK v")
    for module in (REPO_ROOT / "tap_bolna").glob("*.py"):
        text = module.read_text(encoding="utf-8")
        assert "__version__" not in text, module.name
        assert VERSION not in text, module.name


def test_changelog_has_unreleased_and_a_dated_entry_for_the_current_version() -> None:
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\](.*)$", changelog, flags=re.MULTILINE)
    assert headings[0] == ("Unreleased", "")
    released = headings[1:]
    assert released, "no released version"
    # A version bump without its changelog entry (or the reverse) fails here.
    assert released[0][0] == VERSION
    for version, rest in released:
        assert re.fullmatch(r" - \d{4}-\d{2}-\d{2}", rest), version
        assert f"[{version}]: {REPOSITORY}/releases/tag/v{version}" in changelog
    assert f"[Unreleased]: {REPOSITORY}/compare/v{VERSION}...HEAD" in changelog


def test_readme_says_how_to_cut_a_release_and_what_to_pin() -> None:
    section = readme_section("Releases")
    for step in ("uv version", "CHANGELOG.md", "make hub-definition", "uv build", "git tag"):
        assert step in section, step
    for pin in (
        f"git+{REPOSITORY}.git@v{VERSION}",
        f"tap_bolna-{VERSION}-py3-none-any.whl",
        f"tap-bolna=={VERSION}",
    ):
        assert pin in section, pin


# --------------------------------------------------------------------------- the artefacts


@pytest.mark.e2e
def test_uv_build_makes_an_sdist_and_a_wheel_of_this_version(distributions: Distributions) -> None:
    assert distributions.sdist.name == f"tap_bolna-{VERSION}.tar.gz"
    assert distributions.wheel.name == f"tap_bolna-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(distributions.wheel) as wheel:
        names = wheel.namelist()
        info = f"tap_bolna-{VERSION}.dist-info"
        metadata = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert metadata["Version"] == VERSION
    assert SpecifierSet(metadata["Requires-Python"]) == SpecifierSet(requires_python())
    assert metadata["License-Expression"] == "Apache-2.0"
    assert f"{info}/licenses/LICENSE" in names
    assert "tap-bolna = tap_bolna.tap:TapBolna.cli" in entry_points
    assert "tap-bolna-state = tap_bolna.state:main" in entry_points
    assert {name.split("/")[0] for name in names} == {"tap_bolna", info}  # no tests, no scripts
    with tarfile.open(distributions.sdist) as sdist:
        members = {member.name.split("/", 1)[-1] for member in sdist.getmembers()}
    for expected in ("pyproject.toml", "LICENSE", "CHANGELOG.md", "meltano-hub/tap-bolna.yml"):
        assert expected in members, expected


# Nothing of the test run's own environment: as a user's shell would be.
PLAIN_ENV = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "UV"}}


@dataclass(frozen=True)
class PipInstall:
    """The wheel installed by plain pip into an empty venv of one Python, or why not."""

    python: str | None  # None: this machine has no such Python
    venv: Path
    returncode: int = 0
    stderr: str = ""

    def run(self, command: str, *args: str) -> str:
        """A command of the venv, its stdout; fails the test when it exits non-zero."""
        done = subprocess.run(
            [str(self.venv / "bin" / command), *args],
            capture_output=True,
            text=True,
            env=PLAIN_ENV,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout


def pip_install(version: str, wheel: Path, venv: Path) -> PipInstall:
    """`python -m venv` and `pip install <wheel>`, as a user without uv would."""
    python = find_python(version)
    if python is None:
        return PipInstall(None, venv)
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=COMMAND_TIMEOUT)
    installed = subprocess.run(
        # --no-compile: writing every dependency's .pyc files was 30 % of pip's CPU time here
        # (14.9 s against 10.5 s on 3.12); whether the wheel installs and runs does not need them.
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile", str(wheel)],
        capture_output=True,
        text=True,
        env=PLAIN_ENV,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    return PipInstall(python, venv, installed.returncode, installed.stderr)


@pytest.fixture(scope="module")
def pip_installs(
    distributions: Distributions, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, PipInstall]:
    """The wheel installed on every claimed Python, two at a time (mostly waiting on pip)."""
    root = tmp_path_factory.mktemp("pip")
    with ThreadPoolExecutor(max_workers=2) as pool:
        started = {
            version: pool.submit(pip_install, version, distributions.wheel, root / version)
            for version in claimed_versions()
        }
    return {version: future.result() for version, future in started.items()}


@pytest.mark.e2e
@pytest.mark.parametrize("version", claimed_versions())
def test_the_wheel_installs_with_pip_and_says_its_version(
    pip_installs: dict[str, PipInstall], version: str
) -> None:
    install = pip_installs[version]
    if install.python is None:
        message = f"Python {version} is claimed (requires-python) but not on this machine"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert install.returncode == 0, install.stderr[-3000:]
    runs_on = install.run("python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])")
    assert runs_on.strip() == version
    assert install.run("tap-bolna", "--version").startswith(
        f"tap-bolna v{VERSION}, Meltano SDK v0.54."
    )
    about = json.loads(install.run("tap-bolna", "--about", "--format=json"))
    assert version in about["supported_python_versions"]
    assert "usage: tap-bolna-state" in install.run("tap-bolna-state", "--help")
