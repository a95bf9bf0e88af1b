"""The README and docs speak of the project."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
# Words about how the work was organised, not about d3.
ORGANISATION = re.compile(r"\b(sessions?|no device|had a device)\b", re.IGNORECASE)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_prose_speaks_of_the_project_not_of_how_the_work_was_organised():
    for path in documents():
        found = [(number, line) for number, line in enumerate(
            path.read_text(encoding="utf-8").splitlines(), start=1) if ORGANISATION.search(line)]
        assert not found, f"{path.name}:{found[0][0]}: {found[0][1]}"

