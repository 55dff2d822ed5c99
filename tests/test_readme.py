"""README.md is the front door: its set-up + test command is exactly what CI runs, it stays short and
links every page of docs/, and no relative link in it or in docs/ points to a file or heading that is gone."""

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


# The README is what a newcomer reads in the first hour; the rest lives in docs/, one link away.
README_MAX_BYTES = 25_000

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target), with an optional "title"; angle-bracket autolinks are not matched.
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _markdown_files(repo_root: Path) -> list[Path]:
    return [repo_root / "README.md", *sorted((repo_root / "docs").glob("*.md"))]


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks: links and headings in code are not markdown."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def _links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link and image outside code."""
    found = []
    for number, line in _prose_lines(text):
        for match in LINK.finditer(INLINE_CODE.sub("code", line)):
            found.append((number, match.group(2)))
    return found


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: links reduced to their text, lowercased, every character but
    letters, digits, '_', '-' and spaces removed, each space turned into '-'."""
    text = LINK.sub(lambda match: match.group(1), heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """Anchors of a markdown file's headings; a repeated one gets -1, -2, ... as on GitHub."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for _number, line in _prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        anchor = github_anchor(match.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def _relative_targets(path: Path) -> list[tuple[int, Path, str]]:
    """(line number, file the link points to, anchor or '') of every relative link in a markdown file."""
    targets = []
    for number, target in _links(path.read_text()):
        if SCHEME.match(target) or target.startswith("//"):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path.resolve()
        targets.append((number, resolved, anchor))
    return targets


def test_github_anchor_rules() -> None:
    assert github_anchor("Sign-in with Entra ID (auth: entra)") == "sign-in-with-entra-id-auth-entra"
    assert github_anchor("With `database: flexibleServer`") == "with-database-flexibleserver"
    assert github_anchor("Later `pulumi up`s") == "later-pulumi-ups"
    assert github_anchor("Changes that would replace the data: stopped") == (
        "changes-that-would-replace-the-data-stopped"
    )
    assert github_anchor("See [the guide](docs/x.md) now") == "see-the-guide-now"
    assert github_anchor("snake_case and a -- dash") == "snake_case-and-a----dash"


def test_readme_stays_a_front_door(repo_root: Path) -> None:
    size = len((repo_root / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes, over {README_MAX_BYTES}: move detail to docs/ and link to it"
    )


def test_readme_links_every_doc(repo_root: Path) -> None:
    linked = {resolved for _number, resolved, _anchor in _relative_targets(repo_root / "README.md")}
    docs = sorted((repo_root / "docs").glob("*.md"))
    assert docs, "docs/ holds no markdown file"
    unlinked = [doc.relative_to(repo_root).as_posix() for doc in docs if doc.resolve() not in linked]
    assert not unlinked, f"README.md links no {unlinked}: add each to 'Where to read more'"


def test_relative_links_resolve(repo_root: Path) -> None:
    broken = []
    root = repo_root.resolve()
    for path in _markdown_files(repo_root):
        name = path.relative_to(repo_root).as_posix()
        for number, resolved, anchor in _relative_targets(path):
            inside = resolved.is_relative_to(root)
            where = f"{name}:{number}: {resolved.relative_to(root) if inside else resolved}"
            if not inside or not resolved.exists():
                broken.append(f"{where} does not exist in the repository")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{where} has no heading with the anchor #{anchor}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_architecture_names_every_component(repo_root: Path) -> None:
    """docs/architecture.md, the module-by-module map, names every module in components/."""
    text = (repo_root / "docs" / "architecture.md").read_text()
    modules = sorted(p.stem for p in (repo_root / "components").glob("*.py") if p.stem != "__init__")
    missing = [m for m in modules if f"`{m}`" not in text]
    assert not missing, f"docs/architecture.md does not name components/{missing}"
