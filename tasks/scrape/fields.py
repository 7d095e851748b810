"""The ``[[sites]]`` table's own fields, as data (``workers.core.source_schema``);
``read_site`` validates them (selectors compiled, ``id`` and ``price`` among the fields)."""

from __future__ import annotations

from workers.core.source_schema import FieldSpec

SITE_FIELDS = (
    FieldSpec(
        "item",
        "string",
        "CSS selector of one listing on a page.",
        required=True,
        constraints={"minLength": 1},
        example="div.listing",
    ),
    FieldSpec(
        "fields",
        "table",
        "Each field of a listing: a CSS selector within the listing, 'css' for its text or "
        "'css@attr' for an attribute (links made absolute). At least one.",
        required=True,
        constraints={
            "minProperties": 1,
            "additionalProperties": {"type": "string", "minLength": 1},
        },
        example={"title": "h2 a", "link": "h2 a@href", "ref": ".ref", "price": ".price"},
    ),
    FieldSpec(
        "id",
        "string",
        "The field (one of fields) that identifies a listing.",
        required=True,
        constraints={"minLength": 1},
        example="ref",
    ),
    FieldSpec(
        "next_page",
        "string",
        "CSS selector of the next page's link ('a.next@href'); absent: one page.",
        example="a.next@href",
    ),
    FieldSpec(
        "max_pages",
        "integer",
        "Pages read per run at most (pagination loops are detected).",
        default=1,
        constraints={"minimum": 1},
        example=3,
    ),
    FieldSpec(
        "price",
        "string",
        "The field (one of fields) holding the price, parsed into a number and a currency.",
        example="price",
    ),
    FieldSpec(
        "robots",
        "boolean",
        "Respect the site's robots.txt.",
        default=True,
    ),
    FieldSpec(
        "price_drop_pct",
        "number",
        "A drop of this many percent or more is a `changes` entry; absent: not reported.",
        constraints={"minimum": 0},
        example=10,
    ),
    FieldSpec(
        "price_rise_pct",
        "number",
        "Likewise for a rise.",
        constraints={"minimum": 0},
        example=25,
    ),
)
