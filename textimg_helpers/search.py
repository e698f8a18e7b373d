"""Searching by text or by image: an encoder makes the query vector, the store finds its neighbours.

This is the one place where the model and the database meet (the store never imports the encoders)."""

from __future__ import annotations

from typing import Sequence

from pymilvus import MilvusClient

from .encoders import encode_image_file, encode_queries
from .hits import Hit
from .store import search_by_vector


def search_by_text(client: MilvusClient, collection_name: str, encoder, query: str,
                   top_k: int = 10, filter: str = "", templates: Sequence[str] | None = None) -> list[Hit]:
    """Encode ``query`` with CLIP and return the ``top_k`` closest images, best first.

    ``templates`` (e.g. ``["a photo of a {}", "a drawing of a {}"]``) averages the query's vectors
    over several phrasings (prompt ensembling)."""
    text_embs = encode_queries(encoder, [query], templates)
    return search_by_vector(client, collection_name, text_embs, top_k, filter)[0]


def search_by_image(client: MilvusClient, collection_name: str, encoder, image_path: str,
                    top_k: int = 10, filter: str = "") -> list[Hit]:
    """"More like this": the ``top_k`` images closest to the one at ``image_path``."""
    return search_by_vector(client, collection_name, encode_image_file(encoder, image_path), top_k, filter)[0]
