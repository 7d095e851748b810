"""What ``watchkeeper status`` shows for one bounded structure: its key, size and cap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Size:
    key: str
    size: int
    cap: int

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "cap": self.cap}
