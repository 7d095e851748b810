"""Generated tables in the documentation: blocks between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` markers, rewritten from the declarations (settings, Redis keys).

The tables live in the pages under ``docs/`` (built with MkDocs); a block may appear in
several pages (each stage's page shows its keys, ``docs/keys.md`` all of them), and every
occurrence is rewritten. ``python -m workers.core.settings --docs docs`` and
``python -m workers.core.keys --docs docs`` rewrite every page holding a marker;
``--readme FILE…`` rewrites the files named; ``--check`` writes nothing and exits 1 naming
each stale or missing block.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

DOCS = "docs"
"""The documentation folder, relative to the repository (MkDocs' ``docs_dir``)."""


def _block(name: str) -> re.Pattern[str]:
    start, end = re.escape(f"<!-- {name}:start -->"), re.escape(f"<!-- {name}:end -->")
    return re.compile(rf"({start}\n)(.*?)(\n?{end})", re.S)


def found(text: str, name: str) -> list[str]:
    """The contents of every ``name`` block in ``text``."""
    return [m.group(2) for m in _block(name).finditer(text)]


def rewrite(text: str, blocks: Mapping[str, str]) -> str:
    """``text`` with every occurrence of each named block replaced by its table."""
    for name, table in blocks.items():

        def put(m: re.Match[str], table: str = table) -> str:
            return f"{m.group(1)}{table}\n{m.group(3).lstrip()}"

        text = _block(name).sub(put, text)
    return text


def pages(folder: str | Path = DOCS) -> list[Path]:
    """The Markdown pages under ``folder``, in a stable order."""
    return sorted(Path(folder).rglob("*.md"))


def stale(paths: Sequence[Path], blocks: Mapping[str, str]) -> list[str]:
    """One line per block that is out of date in a file, or found in none of them."""
    problems: list[str] = []
    seen: set[str] = set()
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for name, table in blocks.items():
            contents = found(text, name)
            seen.update([name] if contents else [])
            if any(c != table for c in contents):
                problems.append(f"{path}: the {name} table is stale")
    problems += [f"no page holds the {name} table" for name in blocks if name not in seen]
    return problems


def main(argv: Sequence[str], blocks: Callable[[], Mapping[str, str]], module: str) -> int:
    """The generators' command line: ``--docs [DIR]``, ``--readme FILE…``, ``--check``."""
    args = list(argv)
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    if args[:1] == ["--docs"]:
        paths = pages(args[1] if len(args) > 1 else DOCS)
    elif args[:1] == ["--readme"] and len(args) > 1:
        paths = [Path(a) for a in args[1:]]
    elif not args and check:
        paths = pages(DOCS)
    else:
        print(
            f"usage: python -m {module} [--docs [DIR] | --readme FILE…] [--check]",
            file=sys.stderr,
        )
        return 2
    tables = blocks()
    if check:
        problems = stale(paths, tables)
        for line in problems:
            print(f"{line}: run python -m {module} --docs {DOCS}", file=sys.stderr)
        return 1 if problems else 0
    held = False
    for path in paths:
        text = path.read_text(encoding="utf-8")
        if any(found(text, name) for name in tables):
            held = True
            new = rewrite(text, tables)
            if new != text:
                path.write_text(new, encoding="utf-8")
    if not held:
        where = ", ".join(str(p) for p in paths) or "nothing"
        print(
            f"{where}: no generated table here (they are in {DOCS}/: "
            f"python -m {module} --docs {DOCS})",
            file=sys.stderr,
        )
        return 1
    return 0
