"""What a search returns: one ``Hit`` per image, best first. Search and pictures both take it;
it depends on nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Hit:
    """One search result."""

    filepath: str
    label: str
    score: float
    id: int = 0

    def to_dict(self) -> dict:
        return asdict(self)
