"""What a search returns: one ``Hit`` per image, best first. Search and pictures both take it;
it depends on nothing."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

__all__ = ["Hit"]


@dataclass
class Hit:
    """One search result; ``meta`` holds what the photo says about itself (``data.photo_metadata``:
    ``taken``, ``camera``, ``lat``, ``lon``, ``width``, ``height``) when its collection stores it, and
    ``text`` the words read in it when its collection stores them (``textimg index --ocr``)."""

    filepath: str
    label: str
    score: float
    id: int = 0
    meta: dict = field(default_factory=dict, repr=False)
    text: str | None = field(default=None, repr=False)  # the words read in the picture (a collection with words)

    def to_dict(self) -> dict:
        """The hit as ``--json`` prints it: ``taken`` in ISO 8601 (local time, no zone); null for what the
        photo does not say (no GPS: ``lat``, ``lon``)."""
        found = {"filepath": self.filepath, "label": self.label, "score": self.score, "id": self.id}
        # the same keys for every hit, null where the row holds nothing (an older collection)
        taken = self.meta.get("taken")
        found["taken"] = (datetime.datetime.fromtimestamp(taken, datetime.timezone.utc).replace(tzinfo=None)
                          .isoformat() if taken is not None else None)
        found["taken_from"] = self.meta.get("taken_from")
        found["camera"] = self.meta.get("camera") or None
        found["lat"], found["lon"] = self.meta.get("lat"), self.meta.get("lon")  # None: no GPS
        found["width"], found["height"] = self.meta.get("width"), self.meta.get("height")
        found["text"] = self.text  # None: the collection stores no words (indexed without --ocr)
        return found
