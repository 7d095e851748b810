"""The README's tour and the documentation under docs/ (built with MkDocs).

The README keeps its first screen (the two set-up commands, verbatim) and a short tour; the
reference lives in docs/. Links are checked both ways they are read: on GitHub (a relative
link must name a file that exists) and as the MkDocs site (`mkdocs build --strict`: links,
anchors, every page in the nav).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import workers.stages  # noqa: F401 (declares the stages' kinds and sections)
from tests.support.helpers import ROOT
from workers.core.sources_file import validate_config

README = ROOT / "README.md"
INSTALL_AND_DEMO = "python3 -m pip install . && watchkeeper run --demo"
INSTALL_AND_TEST = "python3 -m pip install -e '.[test]' && python3 -m pytest"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_readme_is_a_short_tour_with_the_two_commands_on_its_first_screen() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the reference goes in docs/"
    first_screen = lines[:25]
    blocks = [
        line
        for i, line in enumerate(first_screen)
        if i > 0 and first_screen[i - 1].startswith("```sh")
    ]
    assert blocks == [INSTALL_AND_DEMO, INSTALL_AND_TEST]


def test_the_readme_configuration_example_is_a_valid_sources_file() -> None:
    text = README.read_text(encoding="utf-8")
    examples = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(examples) == 1
    assert len(examples[0].splitlines()) <= 25
    config = validate_config(tomllib.loads(examples[0]), "README.md")
    assert [s.name for s in config.sources] == ["world", "watches"]


def _relative_links(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return [
        link.split("#")[0]
        for link in LINK.findall(text)
        if not re.match(r"[a-z]+:|#", link) and link.split("#")[0]
    ]


def test_every_relative_link_names_a_file_that_exists() -> None:
    """As GitHub reads them: from the README into docs/, from docs/ to the repository."""
    pages = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    broken = [
        f"{page.relative_to(ROOT)}: {link}"
        for page in pages
        for link in _relative_links(page)
        if not (page.parent / link).exists()
    ]
    assert broken == []
    readme_links = _relative_links(README)
    docs = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}
    unlinked = sorted(d for d in docs if f"docs/{d}" not in readme_links)
    assert unlinked == [], f"the README's 'Where to read on' does not link {unlinked}"


def test_the_documentation_builds_strictly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "settings" / "index.html").is_file()


def test_a_generated_block_is_rewritten_wherever_it_appears(tmp_path: Path) -> None:
    from workers.core import doc_tables

    a, b = tmp_path / "a.md", tmp_path / "b.md"
    a.write_text("x\n<!-- t:start -->\nold\n<!-- t:end -->\ny\n<!-- t:start -->\n<!-- t:end -->\n")
    b.write_text("no table here\n")
    assert doc_tables.stale([a, b], {"t": "| new |", "u": "| u |"}) == [
        f"{a}: the t table is stale",
        "no page holds the u table",
    ]
    assert doc_tables.main(["--docs", str(tmp_path)], lambda: {"t": "| new |"}, "m") == 0
    block = "<!-- t:start -->\n| new |\n<!-- t:end -->\n"
    assert a.read_text() == f"x\n{block}y\n{block}"
    assert b.read_text() == "no table here\n"
    assert doc_tables.main(["--docs", str(tmp_path), "--check"], lambda: {"t": "| new |"}, "m") == 0
    assert doc_tables.main(["--readme", str(b)], lambda: {"t": "| new |"}, "m") == 1
