"""README.md is the front door: its set-up + test command must be exactly what CI runs."""

from __future__ import annotations

import re
from pathlib import Path


def _readme_test_command(repo_root: Path) -> tuple[str, str]:
    readme = (repo_root / "README.md").read_text()
    match = re.search(r"^(scripts/bootstrap) && (.+)$", readme, flags=re.MULTILINE)
    assert match, "README.md must give the one-line set-up + test command 'scripts/bootstrap && <tests>'"
    return match.group(1), match.group(2).strip()


def _ci_commands(repo_root: Path) -> list[str]:
    lines = (repo_root / ".ci" / "run").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def test_ci_runs_the_readme_command(repo_root: Path) -> None:
    setup, tests = _readme_test_command(repo_root)
    commands = _ci_commands(repo_root)
    assert commands[-2:] == [setup, tests], (
        f".ci/run must end with the README's commands {setup!r} then {tests!r}, got {commands[-2:]!r}"
    )


def test_readme_names_only_scripts_that_exist(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    for script in set(re.findall(r"(?<![\w/.-])((?:scripts|\.ci)/[\w.-]+)", readme)):
        assert (repo_root / script).is_file(), f"README.md mentions {script}, which does not exist"
