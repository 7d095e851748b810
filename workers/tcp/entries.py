"""One record per line from the ``logs`` stream, whatever shape the listener wrote.

Under backlog the listener packs up to ``WATCHKEEPER_TCP_PACK_LINES`` lines of one read into
one entry (``lines`` newline-joined, ``count``, and ``seq`` of its first line) because Redis
writes one packed entry ~20x faster than that many entries (docs/tcp.md). A
reader that wants one record per line passes every entry through ``lines_of``: a packed entry
becomes ``count`` records shaped exactly like unpacked ones (``line``, and ``seq`` numbered on),
any other entry passes through unchanged. ``missed`` counts what a reader lost to the cap.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

PACKED_FIELDS = ("lines", "count")


def lines_of(fields: Mapping[str, str]) -> list[dict[str, str]]:
    """The line records one stream entry holds, in order."""
    if "lines" not in fields:
        return [dict(fields)]
    common = {k: v for k, v in fields.items() if k not in PACKED_FIELDS and k != "seq"}
    lines = fields["lines"].split("\n")
    seq = fields.get("seq")
    first = int(seq) if seq else None
    out = []
    for i, line in enumerate(lines):
        record = {**common, "line": line}
        if first is not None:
            record["seq"] = str(first + i)
        out.append(record)
    return out


def unpack(
    entries: Iterable[tuple[str, Mapping[str, str]]],
) -> Iterator[tuple[str, dict[str, str]]]:
    """``(id, fields)`` pairs as ``XRANGE`` / ``XREAD`` give them → one pair per line; the
    lines of one packed entry share its id."""
    for entry_id, fields in entries:
        for record in lines_of(fields):
            yield entry_id, record


def span(fields: Mapping[str, str]) -> int:
    """How many ``seq`` numbers (lines) an entry covers."""
    return int(fields.get("count") or 1)


def missed(previous: Mapping[str, str] | None, fields: Mapping[str, str]) -> int:
    """Lines written between two entries a reader saw in turn but trimmed before it read them
    (0 for the first entry read or entries without ``seq``)."""
    if previous is None or not previous.get("seq") or not fields.get("seq"):
        return 0
    return max(0, int(fields["seq"]) - int(previous["seq"]) - span(previous))
