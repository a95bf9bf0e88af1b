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


# A table the README shows as `d3 aup` output: the command in a comment, then its output.
COMPUTED = re.compile(r"<!-- (d3 aup [^\n]*?) -->\n(.*?)\n<!-- end -->", re.DOTALL)


def test_every_computed_table_in_the_readme_is_what_d3_aup_prints_now():
    """Each table marked `<!-- d3 aup ARGS -->` ... `<!-- end -->` is rebuilt from the shipped
    per-sample records, to the last digit."""
    import shlex

    from typer.testing import CliRunner

    from d3cli.cli import app

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tables = COMPUTED.findall(readme)
    assert tables, "no computed table in the README"
    for command, shown in tables:
        words = shlex.split(command)[1:]
        files = [str(path) for word in words if "*" in word for path in sorted(ROOT.glob(word))]
        arguments = [word for word in words if "*" not in word]
        arguments[1:1] = files  # after the subcommand, where the shell would expand them
        result = CliRunner().invoke(app, arguments, env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert result.output.strip() == shown.strip(), command
