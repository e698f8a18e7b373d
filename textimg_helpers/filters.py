"""Vector search plus scalar filters: dates, camera and place as one Milvus filter expression.

``photo_filter(after="2023-06-01", camera="pixel")`` gives
``taken >= 1685577600 and camera_key like "%pixel%"``, which Milvus applies while it searches (the
fields are those ``store.create_collection`` makes and ``data.photo_metadata`` fills). ``--near``
is a box in the filter, then the exact distance on the hits it returns (``within_km``).
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

from .config import TextimgError
from .data import wall_clock
from .hits import Hit

__all__ = ["by_date", "collection_filter", "combine", "parse_near", "photo_filter", "within_km"]

KM_PER_DEGREE = 111.32


@dataclass(frozen=True)
class Near:
    lat: float
    lon: float
    km: float = 1.0


def parse_date(text: str, option: str) -> datetime.datetime:
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise TextimgError(f"{option} takes a date as YYYY-MM-DD, such as 2023-06-01, not {text!r}") from None


def parse_near(text: str) -> Near:
    """``LAT,LON[,KM]`` (degrees, kilometres; 1 km by default)."""
    try:
        values = [float(part) for part in text.split(",")]
        near = Near(*values) if len(values) in (2, 3) else None
    except ValueError:
        near = None
    if near is None or not (-90 <= near.lat <= 90 and -180 <= near.lon <= 180 and 0 < near.km <= 20000):
        raise TextimgError(f"--near takes LAT,LON or LAT,LON,KM in degrees and kilometres, such as "
                           f"48.8584,2.2945,2, not {text!r}")
    return near


def photo_filter(after: str | None = None, before: str | None = None, camera: str | None = None,
                 near: Near | None = None) -> str:
    """The Milvus filter for these conditions (dates inclusive; camera: any case, part of make or model)."""
    parts = []
    if after:
        parts.append(f"taken >= {wall_clock(parse_date(after, '--after'))}")
    if before and (end := day_after(parse_date(before, "--before"))) is not None:
        parts.append(f"taken < {wall_clock(end)}")  # no day after 9999-12-31: every date is before it
    if camera is not None:
        text = camera.strip().lower()
        if not text or set(text) & set('%_"\\'):
            raise TextimgError(f"--camera takes a part of a camera's make or model, such as pixel or canon, "
                               f"without % _ \" or \\, not {camera!r}")
        parts.append(f'camera_key like "%{text}%"')
    if near is not None:
        parts.append(near_box(near))
    return " and ".join(parts)


def day_after(day: datetime.datetime) -> datetime.datetime | None:
    """The next day, or ``None`` after the last day a date can name (9999-12-31)."""
    try:
        return day + datetime.timedelta(days=1)
    except OverflowError:
        return None


def near_box(near: Near) -> str:
    """A box of latitudes and longitudes that holds every place within ``near.km``: its longitudes wrap
    at the antimeridian (±180°), and span every longitude when the circle reaches a pole or is that wide."""
    dlat = near.km / KM_PER_DEGREE
    box = f"lat >= {near.lat - dlat:.6f} and lat <= {near.lat + dlat:.6f}"
    dlon = near.km / (KM_PER_DEGREE * max(1e-9, math.cos(math.radians(near.lat))))
    if dlon >= 180 or abs(near.lat) + dlat >= 90:
        return box
    west, east = near.lon - dlon, near.lon + dlon
    if west < -180:
        return f"{box} and (lon >= {west + 360:.6f} or lon <= {east:.6f})"
    if east > 180:
        return f"{box} and (lon >= {west:.6f} or lon <= {east - 360:.6f})"
    return f"{box} and lon >= {west:.6f} and lon <= {east:.6f}"


def collection_filter(client, collection_name: str, after: str | None = None, before: str | None = None,
                      camera: str | None = None, near: Near | None = None) -> str:
    """``photo_filter`` for a collection: one ``TextimgError`` when it was made before photos'
    metadata was stored (it would match nothing)."""
    from .store import has_metadata, metadata_missing_message

    where = photo_filter(after, before, camera, near)
    if where and not has_metadata(client, collection_name):
        raise TextimgError(metadata_missing_message(collection_name))
    return where


def combine(where: str, photo: str) -> str:
    """``--where`` and the photo filter, both applying."""
    if where and photo:
        return f"({where}) and {photo}"
    return where or photo


def km_between(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine, a sphere of 6,371 km)."""
    p1, p2, dp, dl = map(math.radians, (lat1, lat2, lat2 - lat1, lon2 - lon1))
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, a)))


def within_km(hits: list[Hit], near: Near | None) -> list[Hit]:
    """The hits taken within ``near.km`` of the place (the filter's box also holds its corners)."""
    if near is None:
        return hits
    return [hit for hit in hits if "lat" in hit.meta
            and km_between(near.lat, near.lon, hit.meta["lat"], hit.meta["lon"]) <= near.km]


def by_date(hits: list[Hit]) -> list[Hit]:
    """Newest first (``--sort date``)."""
    return sorted(hits, key=lambda hit: hit.meta.get("taken", 0), reverse=True)
