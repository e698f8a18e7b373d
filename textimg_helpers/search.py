"""Searching: a query becomes one query vector, and the store finds the images closest to it.

A query is a text (``search_by_text``), an image (``search_by_image``, "more like this"), or weighted
terms of both (``search_by_terms``: ``"a dog" + photo.jpg - "grass"``). Each term is encoded to a unit
vector (texts by CLIP's text encoder, images by its image encoder); the query vector is their weighted
sum, normalised again, so a search with it is a cosine search. A text or an image alone is one term.

A term is an IMAGE when it ends in an image extension (``data.IMAGE_EXTENSIONS``: ``.jpg .png .heic``...,
any case): it must then be a readable file. Anything else is text. ``WEIGHT:TERM`` (``2:a dog``,
``0.5:photo.jpg``) weights a term; the weight is a positive number, 1 when left out.

This is the one place where the model and the database meet (the store never imports the encoders).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import TextimgError
from .data import IMAGE_EXTENSIONS, read_image_bytes, read_query_image
from .hits import Hit
from .store import search_by_vector, search_hybrid

__all__ = ["Term", "check_terms", "combine_vectors", "describe_terms", "parse_expression", "parse_term",
           "parse_terms", "search_by_image", "search_by_photo_bytes", "search_by_terms", "search_by_text",
           "search_words_and_image", "words_of"]

# The encoders (and so torch) are imported inside the functions that encode: a query is parsed and
# refused, when it must be, before any model is loaded.

# "2:a dog", "0.5:photo.jpg"; not "3:00 pm" (a digit right after the colon stays text)
WEIGHTED = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*:(?!\d)(.*)$", re.DOTALL)
MAX_WEIGHT = 100.0  # past this one term drowns the others: the sum's other terms stop mattering
OPERATOR = re.compile(r"(?:^|\s+)([+-])\s+")  # " + " or " - ", spaces around the sign


@dataclass(frozen=True)
class Term:
    """One part of a combined query: a text or an image path, with its signed weight."""

    value: str
    weight: float = 1.0
    is_image: bool = False

    def __str__(self) -> str:
        """``'a dog'``, ``2:'a dog'``: how the term is shown (the sign is shown by ``describe_terms``)."""
        weight = abs(self.weight)
        return (f"{weight:g}:" if weight != 1 else "") + repr(self.value)


def is_image_term(value: str) -> bool:
    """True when ``value`` ends in an image extension (then it must be a readable image file)."""
    return Path(value.strip()).suffix.lower() in IMAGE_EXTENSIONS


def parse_term(text: str, sign: int = 1) -> Term:
    """``"a dog"``, ``"2:a dog"``, ``"0.5:photo.jpg"`` -> a ``Term``; ``sign=-1`` for a term to subtract."""
    from .encoders import check_query

    match = WEIGHTED.match(text)
    weight, value = (float(match[1]), match[2].strip()) if match else (1.0, text.strip())
    if not 0 < weight <= MAX_WEIGHT:  # also inf, from a weight of hundreds of digits
        raise TextimgError(f"the weight of {text[:60]!r} is {weight:g}: a weight is a positive number, at most "
                           f"{MAX_WEIGHT:g}, such as 2:'a dog' or 0.5:photo.jpg (use --minus to subtract a term)")
    check_query(value, warn=False)
    return Term(value, sign * weight, is_image_term(value))


def parse_terms(query: str, plus: Sequence[str] = (), minus: Sequence[str] = ()) -> list[Term]:
    """The CLI's terms: the query and each ``--plus`` added, each ``--minus`` subtracted."""
    return [parse_term(query)] + [parse_term(t) for t in plus] + [parse_term(t, -1) for t in minus]


def parse_expression(expression: str) -> list[Term]:
    """``"a red circle - red + blue"`` -> terms; they are joined by `` + `` or `` - `` (a space on each
    side of the sign, so ``t-shirt`` stays one word). For one text box (the search panel)."""
    parts = OPERATOR.split(expression.strip())
    terms = [parse_term(parts[0])] if parts[0].strip() or len(parts) == 1 else []
    for sign, text in zip(parts[1::2], parts[2::2]):
        terms.append(parse_term(text, -1 if sign == "-" else 1))
    return check_terms(terms)


def check_terms(terms: Sequence[Term]) -> list[Term]:
    """Refuse terms with nothing to add (only terms to subtract) or an unreadable image, before any
    model is loaded (image files are checked by their header); returns the terms."""
    if not any(term.weight > 0 for term in terms):
        raise TextimgError("a combined query needs at least one term to add, not only terms to subtract")
    for term in terms:
        if term.is_image:
            read_query_image(term.value, header_only=True)
    return list(terms)


def describe_terms(terms: Sequence[Term]) -> str:
    """``'a red circle' - 'red' + 'blue'``: the terms as one line (titles, status lines)."""
    text = ""
    for i, term in enumerate(terms):
        sign = "-" if term.weight < 0 else "+"
        text += (f"{sign} " if i == 0 and sign == "-" else "" if i == 0 else f" {sign} ") + str(term)
    return text


def encode_terms(encoder, terms: Sequence[Term], templates: Sequence[str] | None = None,
                 text_encoder=None) -> np.ndarray:
    """One unit vector per term, in order, shape (n, dim): images by ``encoder``, texts by
    ``text_encoder`` (default ``encoder``; one that maps text into the same space, e.g. multilingual).
    ``templates`` apply to text terms only."""
    from .encoders import encode_image_file, encode_queries

    texts = [term.value for term in terms if not term.is_image]
    text_embs = iter(encode_queries(text_encoder or encoder, texts, templates) if texts else [])
    return np.stack([encode_image_file(encoder, term.value)[0] if term.is_image else next(text_embs)
                     for term in terms]).astype(np.float32)


def combine_vectors(embs: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """The weighted sum of unit vectors (n, dim), normalised again: shape (1, dim)."""
    query = np.asarray(weights, dtype=np.float32) @ np.asarray(embs, dtype=np.float32)
    norm = float(np.linalg.norm(query))
    if norm < 1e-6:
        raise TextimgError("the terms cancel each other out (their weighted sum is zero): change a weight")
    return (query / norm)[None, :]


def combine_query(encoder, terms: Sequence[Term], templates: Sequence[str] | None = None,
                  text_encoder=None) -> np.ndarray:
    """The query vector of ``terms``, shape (1, dim): encoded, weighted, summed, normalised."""
    terms = check_terms(terms)
    embs = encode_terms(encoder, terms, templates, text_encoder)
    return combine_vectors(embs, [term.weight for term in terms])


def search_by_terms(client, collection_name: str, encoder, terms: Sequence[Term], top_k: int = 10,
                    filter: str = "", templates: Sequence[str] | None = None, text_encoder=None) -> list[Hit]:
    """The ``top_k`` images closest to the combined query of ``terms``, best first (``Hit`` objects);
    ``text_encoder`` encodes the text terms instead of ``encoder`` (see ``encode_terms``)."""
    query_vector = combine_query(encoder, terms, templates, text_encoder)
    return search_by_vector(client, collection_name, query_vector, top_k, filter)[0]


def search_by_text(client, collection_name: str, encoder, query: str, top_k: int = 10, filter: str = "",
                   templates: Sequence[str] | None = None) -> list[Hit]:
    """Encode ``query`` with CLIP and return the ``top_k`` closest images, best first.

    ``templates`` (e.g. ``["a photo of a {}", "a drawing of a {}"]``) averages the query's vectors
    over several phrasings (prompt ensembling)."""
    return search_by_terms(client, collection_name, encoder, [Term(query)], top_k, filter, templates)


def search_by_image(client, collection_name: str, encoder, image_path: str, top_k: int = 10,
                    filter: str = "") -> list[Hit]:
    """"More like this": the ``top_k`` images closest to the one at ``image_path``."""
    return search_by_terms(client, collection_name, encoder, [Term(str(image_path), is_image=True)], top_k, filter)


def words_of(terms: Sequence[Term]) -> str:
    """The words of a query for a full-text search: its text terms to add, joined ("" for images only)."""
    return " ".join(term.value for term in terms if not term.is_image and term.weight > 0)


def search_words_and_image(client, collection_name: str, encoder, terms: Sequence[Term], top_k: int = 10,
                           filter: str = "", templates: Sequence[str] | None = None, text_encoder=None) -> list[Hit]:
    """The ``top_k`` best of two searches fused in one Milvus ``hybrid_search`` (``store.search_hybrid``):
    the words read in the pictures against the query's words (BM25), and the pictures against its
    CLIP vector; a query of images only is a picture search."""
    query_vector = combine_query(encoder, terms, templates, text_encoder)
    if not (words := words_of(terms)):
        return search_by_vector(client, collection_name, query_vector, top_k, filter)[0]
    return search_hybrid(client, collection_name, words, query_vector, top_k, filter)


def search_by_photo_bytes(client, collection_name: str, encoder, content: bytes, name: str, top_k: int = 10,
                          filter: str = "") -> list[Hit]:
    """"More like this photo": the ``top_k`` images closest to an uploaded photo, read from memory
    (``data.read_image_bytes``: checked like a query image file, never written to disk)."""
    image = read_image_bytes(content, name, max_side=2 * encoder.resolution)
    return search_by_vector(client, collection_name, encoder.encode_images([image]), top_k, filter)[0]
