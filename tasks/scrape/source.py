"""A ``[[sites]]`` table: a listing site, its CSS selectors and pagination."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import soupsieve

from workers.core.sources_file import FieldReader, Source


@dataclass(frozen=True)
class SiteSource(Source):
    item: str = ""
    id: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    next_page: str | None = None
    max_pages: int = 1
    price: str | None = None
    robots: bool = True
    price_drop_pct: float | None = None
    price_rise_pct: float | None = None

    kind: ClassVar[str] = "site"


def check_selector(f: FieldReader, name: str, value: str) -> None:
    css = value.split("@", 1)[0].strip()
    try:
        soupsieve.compile(css)
    except Exception as exc:  # soupsieve raises SelectorSyntaxError and ValueError
        f.problem(name, f"bad CSS selector {css!r}: {str(exc).splitlines()[0]}")


def read_site(f: FieldReader, name: str) -> SiteSource:
    item = f.get("item", str, "", required=True)
    if item:
        check_selector(f, "item", item)
    elif "item" in f.table:
        f.problem("item", "must not be empty")
    fields_table = f.get("fields", dict, {}, required=True)
    site_fields: dict[str, str] = {}
    for fname, css in fields_table.items():
        if not isinstance(css, str) or not css.strip():
            f.problem(f"fields.{fname}", "expected a CSS selector string ('css' or 'css@attr')")
            continue
        check_selector(f, f"fields.{fname}", css)
        site_fields[fname] = css
    if "fields" in f.table and not fields_table:
        f.problem("fields", "needs at least one field")
    id_field = f.get("id", str, "", required=True)
    if not id_field and "id" in f.table:
        f.problem("id", "must not be empty")
    elif id_field and site_fields and id_field not in site_fields:
        f.problem("id", f"{id_field!r} is not one of the fields ({', '.join(site_fields)})")
    next_page = f.get("next_page", str, None)
    if next_page is not None:
        check_selector(f, "next_page", next_page)
    max_pages = f.get("max_pages", int, 1)
    if max_pages < 1:
        f.problem("max_pages", f"{max_pages} must be at least 1")
    price = f.get("price", str, None)
    if price is not None and site_fields and price not in site_fields:
        f.problem("price", f"{price!r} is not one of the fields ({', '.join(site_fields)})")
    return SiteSource(
        name=name,
        url=f.url(),
        interval=f.interval(),
        item=item,
        id=id_field,
        fields=site_fields,
        next_page=next_page,
        max_pages=max_pages,
        price=price,
        robots=f.get("robots", bool, True),
        price_drop_pct=_percent(f, "price_drop_pct"),
        price_rise_pct=_percent(f, "price_rise_pct"),
    )


def _percent(f: FieldReader, name: str) -> float | None:
    """A price-change threshold in percent: absent = that direction is not reported."""
    value = f.get(name, (int, float), None)
    if value is not None and value < 0:
        f.problem(name, f"{value} must be zero or more")
        return None
    return None if value is None else float(value)
