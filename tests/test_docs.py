"""The README and docs speak of the project, and name only files that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "src" / "d3cli"
# Words about how the work was organised, not about d3.
ORGANISATION = re.compile(r"\b(sessions?|no device|had a device)\b", re.IGNORECASE)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_prose_speaks_of_the_project_not_of_how_the_work_was_organised():
    for path in documents():
        found = [(number, line) for number, line in enumerate(
            path.read_text(encoding="utf-8").splitlines(), start=1) if ORGANISATION.search(line)]
        assert not found, f"{path.name}:{found[0][0]}: {found[0][1]}"


def test_the_readme_layout_names_only_what_exists():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    names = re.findall(r"`([\w./-]+(?:\.py|\.md|/))`", layout)
    assert "architecture.md" in layout and names
    missing = [name for name in names if not any(
        (base / name).exists() for base in (ROOT, PACKAGE))]
    assert not missing, missing
