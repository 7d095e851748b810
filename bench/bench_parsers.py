"""Parser fidelity and cost: every feed parser against feedparser, on two corpora.

    python bench/bench_parsers.py               # both corpora, 5 timed repetitions
    python bench/bench_parsers.py --reps 1 --show 20   # quicker; list 20 disagreements

Corpora (downloaded once into ``~/.cache/watchkeeper-bench`` with the ordinary clients):

* **feedparser's test corpus**: every ``tests/**/*.xml`` of feedparser's sdist (as
  ``bench/bench_polls.py``), each parsed with the HTTP headers its ``Header:`` lines give (as
  feedparser's own test runner serves them). Small, odd, often broken on purpose.
* **real-world feeds shipped inside registry packages** (``REAL_WORLD``: npm packages' test
  fixtures captured from live sites — news, podcasts, Reddit, Craigslist, blogs, JSON Feeds —
  each with its package, version and licence, all MIT).

Parsers: ``feedparser`` (the reference; ``tasks/feeds/classic.py`` through the layer),
``fast`` (feedparser-rs through the layer, ``parser = "fast"``), ``auto`` (the layer's
default: feedparser-rs, feedparser as the safety net), and bare ``fastfeedparser`` when
installed (the other candidate, not a dependency). For each document: entries found, and per
entry whether title, link, key (id, else link, else a hash) and published date equal
feedparser's — compared on the alert fields watchkeeper writes (``tasks/feeds/parse.py``).
CPU per feed: this process's CPU time, the median of ``--reps`` passes over the corpus.

JSON Feeds are compared against feedparser-rs's reading (feedparser does not read them).
Prints a table; writes ``bench/results/parsers.json`` with every disagreement listed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_polls import CACHE, feedparser_corpus
from bench.common import write_result
from tasks.feeds.parse import alerts_of
from tasks.feeds.parsers import Options, Parsed, parse_document
from tasks.feeds.source import FeedSource

REAL_WORLD: list[tuple[str, str, str, str]] = [
    # (npm package@version, folder inside it, file glob, licence)
    ("rss-parser@3.7.0", "package/test/input", "*", "MIT (c) 2016 Bobby Brennan"),
    ("@extractus/feed-extractor@6.1.7", "package/test-data", "*", "MIT (c) 2015 Extractus"),
    ("feedparser@1.1.4", "package/test/feeds", "*", "MIT (c) 2011 Dan MacTough"),
    ("podcast-feed-parser@1.0.4", "package/test/testfiles", "*", "MIT (c) Tyler Henkel"),
    ("jsonfeed-to-atom@1.2.5", "package/reference", "*.json", "MIT (c) Brett Beutell"),
]
"""Feeds captured from live sites by other projects and shipped in their npm packages.
A few are small hand-written samples (``*-standard.*``, ``missing-fields.atom``); the
HTML page and the unrecognized document stay in: every parser must say "no entries"."""

FIELDS = ("title", "link", "key", "published")
HEADER = re.compile(rb"^Header:\s*([\w-]+):\s*(.*?)\s*$", re.M)


def real_world_corpus() -> list[Path]:
    root = CACHE / "real-world"
    paths: list[Path] = []
    for spec, folder, pattern, _licence in REAL_WORLD:
        name = spec.lstrip("@").replace("/", "-").replace("@", "-")
        target = root / name
        if not target.is_dir():
            root.mkdir(parents=True, exist_ok=True)
            out = subprocess.run(
                ["npm", "pack", spec, "--silent", "--pack-destination", str(root)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()[-1]
            with tarfile.open(root / out) as tar:
                members = [m for m in tar.getmembers() if m.name.startswith(folder + "/")]
                tar.extractall(target, members=members, filter="data")
        paths += sorted(Path(p) for p in glob.glob(str(target / folder / pattern)))
    return [p for p in paths if p.is_file()]


def headers_of(body: bytes) -> dict[str, str]:
    """The HTTP headers a feedparser test file asks to be served with."""
    head = body[:2048]
    if not head.lstrip().startswith(b"<!--"):
        return {}
    return {
        k.decode().lower(): v.decode("latin-1") for k, v in HEADER.findall(head.split(b"-->")[0])
    }


def headers_for(path: Path, body: bytes) -> dict[str, str]:
    found = headers_of(body)
    if "content-type" not in found:
        found["content-type"] = "application/json" if path.suffix == ".json" else "text/xml"
    return found


SOURCE = FeedSource(name="bench", url="http://127.0.0.1/feed", interval=60.0)


def layer(choice: str) -> Callable[[bytes, dict[str, str]], Parsed]:
    options = Options(choice=choice)
    return lambda body, headers: parse_document(body, headers, options)


def fastfeedparser_parse() -> Callable[[bytes, dict[str, str]], Parsed] | None:
    try:
        import fastfeedparser
    except ImportError:
        return None

    def parse(body: bytes, headers: dict[str, str]) -> Parsed:
        parsed = fastfeedparser.parse(body)
        entries = []
        for e in parsed.entries:
            entry = {k: e.get(k) for k in ("id", "link", "title", "summary", "author")}
            entry = {k: str(v) for k, v in entry.items() if v}
            for name in ("published", "updated"):
                if e.get(name):
                    entry[name] = str(e[name])
                    when = _iso(str(e[name]))
                    if when is not None:
                        entry[name + "_parsed"] = when
            entry["tags"] = [str(t.get("term")) for t in e.get("tags") or () if t.get("term")]
            entries.append(entry)
        return Parsed(entries, "fastfeedparser")

    return parse


def _iso(value: str) -> time.struct_time | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(value).utctimetuple()
    except ValueError:
        return None


def signature(parsed: Parsed, headers: dict[str, str]) -> list[dict[str, str]]:
    """The alert fields compared, as ``parse_feed`` writes them (links made absolute)."""
    items = alerts_of(SOURCE, parsed, SOURCE.url, headers, "")
    return [{name: item.fields[name] for name in FIELDS} for item in items]


def run_parser(
    parse: Callable[[bytes, dict[str, str]], Parsed], body: bytes, headers: dict[str, str]
) -> tuple[Parsed | None, str]:
    try:
        return parse(body, headers), ""
    except Exception as exc:
        return None, " ".join(str(exc).split())[:160] or type(exc).__name__


def compare(
    docs: list[tuple[str, bytes, dict[str, str]]],
    parsers: dict[str, Callable[[bytes, dict[str, str]], Parsed]],
    reps: int,
) -> dict[str, Any]:
    reference = "feedparser"
    out: dict[str, Any] = {}
    refs: list[tuple[Parsed | None, str]] = [
        run_parser(parsers[reference], b, h) for _, b, h in docs
    ]
    jsonref = layer("fast")
    for name, parse in parsers.items():
        stats: dict[str, Any] = {
            "documents": len(docs),
            "raised": 0,
            "entries": 0,
            "reference_entries": 0,
            "missed_documents": 0,
            "fallbacks": {},
            "identical": dict.fromkeys(FIELDS, 0),
            "compared": 0,
            "disagreements": [],
        }
        for (label, body, headers), (ref, _) in zip(docs, refs, strict=True):
            got, error = run_parser(parse, body, headers)
            if ref is not None and ref.parser == "json" and name == reference:
                ref, _ = run_parser(jsonref, body, headers)  # feedparser reads no JSON Feed
            if error:
                stats["raised"] += 1
            found = got.entries if got is not None else []
            expected = ref.entries if ref is not None else []
            stats["entries"] += len(found)
            stats["reference_entries"] += len(expected)
            if expected and not found:
                stats["missed_documents"] += 1
            if got is not None and got.fallback:
                stats["fallbacks"][got.fallback] = stats["fallbacks"].get(got.fallback, 0) + 1
            mine = signature(got, headers) if got is not None else []
            theirs = signature(ref, headers) if ref is not None else []
            for a, b in zip(mine, theirs, strict=False):
                stats["compared"] += 1
                for field in FIELDS:
                    if a[field] == b[field]:
                        stats["identical"][field] += 1
                    else:
                        stats["disagreements"].append(
                            {"document": label, "field": field, name: a[field], reference: b[field]}
                        )
            if len(mine) != len(theirs):
                stats["disagreements"].append(
                    {"document": label, "field": "entries", name: len(mine), reference: len(theirs)}
                )
        stats["cpu_us_per_feed"] = cpu_per_feed(parse, docs, reps)
        out[name] = stats
    return out


def cpu_per_feed(
    parse: Callable[[bytes, dict[str, str]], Parsed],
    docs: list[tuple[str, bytes, dict[str, str]]],
    reps: int,
) -> float:
    passes = []
    for _ in range(reps):
        start = time.process_time()
        for _, body, headers in docs:
            run_parser(parse, body, headers)
        passes.append(time.process_time() - start)
    return round(statistics.median(passes) * 1e6 / len(docs), 1)


def load(paths: list[Path], root: Path) -> list[tuple[str, bytes, dict[str, str]]]:
    docs = []
    for path in paths:
        body = path.read_bytes()
        docs.append((str(path.relative_to(root)), body, headers_for(path, body)))
    return docs


def table(results: dict[str, dict[str, Any]]) -> None:
    for corpus, parsers in results.items():
        ref_cpu = parsers["feedparser"]["cpu_us_per_feed"]
        print(f"\n{corpus}: {parsers['feedparser']['documents']} documents")
        print(
            f"{'parser':<15}{'raised':>7}{'entries':>9}{'missed':>8}"
            + "".join(f"{f:>11}" for f in FIELDS)
            + f"{'CPU µs/feed':>13}{'vs fp':>7}  fallbacks"
        )
        for name, s in parsers.items():
            same = "".join(
                f"{100 * s['identical'][f] / max(1, s['compared']):>10.1f}%" for f in FIELDS
            )
            ratio = s["cpu_us_per_feed"] / ref_cpu if ref_cpu else 0
            print(
                f"{name:<15}{s['raised']:>7}{s['entries']:>9}{s['missed_documents']:>8}{same}"
                f"{s['cpu_us_per_feed']:>13.1f}{ratio:>7.3f}  {s['fallbacks'] or ''}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--show", type=int, default=0, help="disagreements to print per parser")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    parsers = {"feedparser": layer("feedparser"), "fast": layer("fast"), "auto": layer("auto")}
    ff = fastfeedparser_parse()
    if ff is not None:
        parsers["fastfeedparser"] = ff
    fp_root = feedparser_corpus()
    fp_paths = sorted(
        Path(p) for p in glob.glob(str(fp_root / "tests" / "**" / "*.xml"), recursive=True)
    )
    real = real_world_corpus()
    corpora = {
        "feedparser's test corpus": load(fp_paths, fp_root / "tests"),
        "real-world feeds": load(real, CACHE / "real-world"),
    }
    load_before = os.getloadavg()
    results = {name: compare(docs, parsers, args.reps) for name, docs in corpora.items()}
    table(results)
    for corpus, by_parser in results.items():
        for name, s in by_parser.items():
            for d in s["disagreements"][: args.show]:
                print(f"  [{corpus} / {name}] {json.dumps(d, ensure_ascii=False)[:300]}")
    print(f"\nload average before / after: {load_before} / {os.getloadavg()}")
    write_result(
        "parsers",
        {
            "corpora": {
                "feedparser's test corpus": f"feedparser sdist tests ({fp_root.name})",
                "real-world feeds": [
                    {"package": p, "folder": f, "licence": lic} for p, f, _, lic in REAL_WORLD
                ],
            },
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "results": results,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
