"""MkDocs hook: links from docs/ to files elsewhere in the repository.

The pages link to repository files by relative path (``../bench/results/soak.png``,
``../workers/data/watchkeeper.example.toml``), so the links work when GitHub shows docs/. MkDocs
sees only docs/, and its strict build refuses such links. This hook copies each linked
repository file into the site under ``_repo/`` and points the link there; a link to a file that
does not exist is left alone, so the strict build still fails on it.

The home page is the README's tour: docs/index.md holds a ``<!-- tour: README.md -->`` marker,
and the site shows README.md there, its ``docs/…`` links made relative to docs/ and its other
relative links to the repository.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files, InclusionLevel
from mkdocs.structure.pages import Page

_LINK = re.compile(r"(\]\()(\.\./[^)\s#]+)([^)]*\))")
_PREFIX = "_repo"


def _targets(page_uri: str, markdown: str, repo: Path) -> dict[str, str]:
    """{link as written: repository path} for the links of one page leaving docs/."""
    found = {}
    for m in _LINK.finditer(markdown):
        target = posixpath.normpath(posixpath.join("docs", posixpath.dirname(page_uri), m[2]))
        if not target.startswith(("docs/", "../")) and (repo / target).is_file():
            found[m[2]] = target
    return found


def _repo(config: Any) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def on_files(files: Files, config: Any) -> Files:
    repo = _repo(config)
    wanted: set[str] = set()
    for f in files.documentation_pages():
        text = Path(f.abs_src_path or "").read_text(encoding="utf-8")
        text = _tour(repo) if f.src_uri == "index.md" and _TOUR in text else text
        wanted.update(_targets(f.src_uri, text, repo).values())
    for target in sorted(wanted):
        files.append(
            File.generated(
                config,
                f"{_PREFIX}/{target}",
                abs_src_path=str(repo / target),
                inclusion=InclusionLevel.NOT_IN_NAV,
            )
        )
    return files


_TOUR = "<!-- tour: README.md -->"
_README_LINK = re.compile(r"(\]\()(?!https?:|mailto:|#|/)([^)\s]+\))")


def _tour(repo: Path) -> str:
    """README.md as docs/index.md: ``docs/x.md`` → ``x.md``, ``y`` → ``../y``."""
    readme = (repo / "README.md").read_text(encoding="utf-8")

    def relink(m: re.Match[str]) -> str:
        link = m[2]
        return m[1] + (link[len("docs/") :] if link.startswith("docs/") else f"../{link}")

    return _README_LINK.sub(relink, readme)


def on_page_markdown(markdown: str, page: Page, config: Any, files: Files) -> str:
    if page.file.src_uri == "index.md" and _TOUR in markdown:
        markdown = _tour(_repo(config))
    targets = _targets(page.file.src_uri, markdown, _repo(config))

    def point(m: re.Match[str]) -> str:
        if m[2] not in targets:
            return m[0]
        here = posixpath.dirname(page.file.src_uri) or "."
        return f"{m[1]}{posixpath.relpath(f'{_PREFIX}/{targets[m[2]]}', here)}{m[3]}"

    return _LINK.sub(point, markdown)
