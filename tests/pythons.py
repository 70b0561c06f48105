"""The Python versions tap-bolna claims (`requires-python`), and where this machine has each.

`python -m tests.pythons` prints one line per claimed minor version, `3.10 /path/to/python3.10`,
or `3.10 -` when this machine has none; `--others` leaves out the version running it. `make test`
runs the unit and fake-API tests once per line; the wheel test installs the wheel with each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.specifiers import SpecifierSet

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# Minor versions looked at: far enough past today's to notice an upper bound that was dropped.
CANDIDATE_MINORS = range(8, 30)


def requires_python() -> str:
    """`requires-python` from pyproject.toml."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    return str(project["requires-python"])


def claimed_versions() -> list[str]:
    """Every 3.x minor version `requires-python` admits, oldest first."""
    allowed = SpecifierSet(requires_python())
    return [f"3.{minor}" for minor in CANDIDATE_MINORS if allowed.contains(f"3.{minor}.0")]


def runs_as(python: str, version: str) -> bool:
    """Whether `python` starts and is that minor version (a pyenv shim may do neither)."""
    try:
        found = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return found.returncode == 0 and found.stdout.strip() == version


def pyenv_pythons(version: str) -> list[str]:
    """pyenv's installs of that minor version, newest patch release first."""
    versions = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"

    def patch(python: Path) -> int:  # 3.13.0t (free-threaded) and the like come last
        tail = python.parents[1].name.removeprefix(f"{version}.")
        return int(tail) if tail.isdigit() else -1

    return [str(path) for path in sorted(versions.glob(f"{version}.*/bin/python{version}"),
                                         key=patch, reverse=True)]  # fmt: skip


def uv_python(version: str) -> str | None:
    """The interpreter `uv python find` picks for that version (uv-managed ones included)."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        return None
    found = subprocess.run(
        [uv, "python", "find", "--no-project", "--system", version],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return found.stdout.strip() if found.returncode == 0 else None


def find_python(version: str) -> str | None:
    """A base interpreter of that minor version (not a virtualenv's): PATH, pyenv, then uv."""
    # Virtual environments on PATH (`uv run` puts .venv/bin first) are left out.
    search = os.pathsep.join(
        folder
        for folder in os.environ.get("PATH", "").split(os.pathsep)
        if folder and not (Path(folder).parent / "pyvenv.cfg").exists()
    )
    on_path = shutil.which(f"python{version}", path=search)
    for candidate in [on_path, *pyenv_pythons(version)]:
        if candidate and runs_as(candidate, version):
            return candidate
    fallback = uv_python(version)
    return fallback if fallback and runs_as(fallback, version) else None


def main(argv: list[str] | None = None) -> int:
    """Print `VERSION PATH` (or `VERSION -`) for each claimed minor version."""
    parser = argparse.ArgumentParser(prog="python -m tests.pythons", description=__doc__)
    parser.add_argument("--others", action="store_true", help="leave out the running version")
    args = parser.parse_args(argv)
    running = "%d.%d" % sys.version_info[:2]  # noqa: UP031 - reads as the two numbers it prints
    for version in claimed_versions():
        if args.others and version == running:
            continue
        sys.stdout.write(f"{version} {find_python(version) or '-'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
