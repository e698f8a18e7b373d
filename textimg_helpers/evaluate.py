"""Measured retrieval quality: one text query per label, recall@k and mAP@10 over all labels."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .config import TextimgError, resolved_path
from .data import label_for, list_image_paths
from .encoders import encode_queries
from .languages import LANGUAGES, query_for, split_label
from .hits import Hit
from .store import count_rows, folder_filter, rows_under, search_by_vector

__all__ = ["ENSEMBLE_TEMPLATES", "EvalReport", "LabelResult", "PHOTO_TEMPLATE", "TEMPLATE_SETS",
           "average_precision", "check_labels_translate", "compare_templates", "evaluate",
           "evaluate_languages", "labelled_images", "language_table", "model_comparison_table"]

PHOTO_TEMPLATE = "a photo of a {}"
# A few of the prompts from CLIP's ImageNet prompt-engineering notebook.
ENSEMBLE_TEMPLATES = ("a photo of a {}.", "a bad photo of a {}.", "a photo of the large {}.",
                      "a photo of the small {}.", "a close-up photo of a {}.", "a bright photo of a {}.",
                      "a cropped photo of a {}.", "a drawing of a {}.", "itap of a {}.", "a good photo of a {}.")
TEMPLATE_SETS = {"label": ("{}",), "photo": (PHOTO_TEMPLATE,), "ensemble": ENSEMBLE_TEMPLATES}


@dataclass
class LabelResult:
    """How one label's query did: its relevant count, the rank of its first hit, AP@10, top hits."""

    label: str
    relevant: int
    first_rank: int | None
    ap10: float
    hits: list[Hit] = field(repr=False, default_factory=list)


@dataclass
class EvalReport:
    """Recall@1/5/10 (share of labels with a relevant image in the top k) and mAP@10."""

    templates: tuple[str, ...]
    results: list[LabelResult]
    images: int

    def recall(self, k: int) -> float:
        return float(np.mean([r.first_rank is not None and r.first_rank <= k for r in self.results]))

    @property
    def map10(self) -> float:
        return float(np.mean([r.ap10 for r in self.results]))

    def worst(self, n: int = 5) -> list[LabelResult]:
        """The labels whose query did worst (lowest AP@10, then latest first hit)."""
        return sorted(self.results, key=lambda r: (r.ap10, -(r.first_rank or 10**9)))[:n]

    def summary(self) -> str:
        return (f"recall@1={self.recall(1):.3f} recall@5={self.recall(5):.3f} "
                f"recall@10={self.recall(10):.3f} mAP@10={self.map10:.3f}")

    def __str__(self) -> str:
        mistakes = [r for r in self.worst() if r.ap10 < 1]
        lines = [f"labels={len(self.results)} images={self.images} templates={list(self.templates)[:3]}"
                 + ("..." if len(self.templates) > 3 else ""),
                 "worst labels:" + ("" if mistakes else " none, every label's top 10 is right")]
        for r in mistakes:
            wrong = [f"#{rank} {hit.label} {hit.score:.2f}" for rank, hit in enumerate(r.hits, 1) if hit.label != r.label]
            lines.append(f"  {r.label}: first relevant at {r.first_rank or '>10'}, AP@10 {r.ap10:.2f}; "
                         f"instead: {', '.join(wrong[:3])}")
        return "\n".join(lines + [self.summary()])


def labelled_images(folder: str | os.PathLike) -> dict[str, int]:
    """``{label: number of image files}`` from sub-folder names or file names."""
    root = resolved_path(folder)
    counts: dict[str, int] = {}
    for path in list_image_paths(root):
        label = label_for(path, root)
        counts[label] = counts.get(label, 0) + 1
    return counts


def average_precision(relevant: list[bool], n_relevant: int, k: int = 10) -> float:
    """AP@k: mean of precision@i at each relevant rank i <= k, over min(k, n_relevant)."""
    found, total = 0, 0.0
    for i, is_rel in enumerate(relevant[:k], start=1):
        if is_rel:
            found += 1
            total += found / i
    return total / min(k, max(n_relevant, found)) if n_relevant else 0.0


def label_query(label: str, lang: str) -> str:
    """A label's query in a language, from the language table ("ein Foto von einem roten Kreis");
    in English any label works ("a photo of a golden retriever")."""
    if split_label(label) is None:
        if lang == "en":
            return PHOTO_TEMPLATE.format(label.replace("_", " "))
        raise TextimgError(f"--lang {lang}: the label {label!r} is not in the language table, which knows the "
                           "<colour>_<shape> labels of the shapes profile (textimg_helpers/languages.py); "
                           "evaluate this folder in English (--lang en, or no --lang)")
    return query_for(label, lang)


def check_labels_translate(labels, langs) -> None:
    """Refuse, before any work, a language that cannot phrase one of the labels."""
    for lang in langs:
        for label in labels:
            label_query(label, lang)


def evaluate(client, collection_name: str, encoder, folder: str | os.PathLike,
             templates: tuple[str, ...] = (PHOTO_TEMPLATE,), top_k: int = 10, progress: bool = True,
             chunk: int = 64, lang: str | None = None) -> EvalReport:
    """Query every label of ``folder`` (already indexed) and score the top ``top_k`` hits among the
    folder's rows; labels and their counts come from those rows (unreadable files were never indexed).
    With ``lang`` (en, de, pt, ru, ar) each label's query comes from the language table instead."""
    rows = rows_under(client, collection_name, folder, ["label"])
    counts = Counter(row["label"] for row in rows.values())
    if not counts:
        raise TextimgError(f"nothing indexed under {folder}: index it first (textimg index FOLDER)")
    labels = sorted(counts)
    if lang:
        check_labels_translate(labels, [lang])
        templates = (LANGUAGES[lang].query_template,)
    in_folder = folder_filter(folder)  # this folder's rows, and maybe a few of a neighbour's, left out below
    limit = top_k + count_rows(client, collection_name, in_folder) - len(rows)
    results = []
    with tqdm(total=len(labels), unit="label", desc=f"evaluating {describe_queries(templates, lang)}",
              disable=not progress) as bar:
        for start in range(0, len(labels), chunk):
            part = labels[start:start + chunk]
            text_embs = encode_labels(encoder, part, templates, lang)
            for label, hits in zip(part, search_by_vector(client, collection_name, text_embs, limit, in_folder)):
                in_rows = [hit for hit in hits if hit.id in rows][:top_k]
                results.append(score_label(label, in_rows, counts[label], top_k))
            bar.update(len(part))
    return EvalReport(tuple(templates), results, sum(counts.values()))


def describe_queries(templates: tuple[str, ...], lang: str | None = None) -> str:
    """How the labels are asked for, for the progress bar: ``de queries``, ``bare labels``, a template."""
    if lang:
        return f"{lang} queries"
    if tuple(templates) == ("{}",):
        return "bare labels"
    return repr(templates[0]) if len(templates) == 1 else f"{len(templates)} templates"


def encode_labels(encoder, labels: list[str], templates: tuple[str, ...], lang: str | None = None) -> np.ndarray:
    """One query vector per label, (n, dim): phrased from the language table with ``lang``, else the
    label's words put in each template (averaged over several)."""
    if lang:
        return encoder.encode_texts([label_query(label, lang) for label in labels])
    return encode_queries(encoder, [label.replace("_", " ") for label in labels], templates)


def score_label(label: str, hits: list[Hit], relevant_count: int, top_k: int = 10) -> LabelResult:
    """How a label's query did: the rank of its first relevant hit and AP@``top_k``."""
    relevant = [hit.label == label for hit in hits]
    first = relevant.index(True) + 1 if True in relevant else None
    return LabelResult(label, relevant_count, first, average_precision(relevant, relevant_count, top_k), hits)


def compare_templates(client, collection_name: str, encoder, folder, progress: bool = True) -> dict[str, EvalReport]:
    """The same evaluation with a bare label, "a photo of a ...", and an average of templates."""
    return {name: evaluate(client, collection_name, encoder, folder, templates, progress=progress)
            for name, templates in TEMPLATE_SETS.items()}


def evaluate_languages(client, collection_name: str, encoder, folder, langs, progress: bool = True) -> dict[str, EvalReport]:
    """The same evaluation once per language, each label's query phrased from the language table."""
    return {lang: evaluate(client, collection_name, encoder, folder, progress=progress, lang=lang) for lang in langs}


def language_table(columns: dict[str, dict[str, EvalReport]]) -> str:
    """One row per language: recall@1/5/10 and mAP@10 of each text model side by side (a header line names
    the models when there are several), then the query of the first label as an example."""
    names, measures = list(columns), ("recall@1", "recall@5", "recall@10", "mAP@10")
    block = " ".join(measures)
    lines = ["      " + " | ".join(f"{name[:len(block)]:<{len(block)}}" for name in names)] if len(names) > 1 else []
    lines.append("lang  " + " | ".join([block] * len(names)) + "  example query")
    for lang, report in columns[names[0]].items():
        cells = []
        for r in (columns[name][lang] for name in names):
            values = (r.recall(1), r.recall(5), r.recall(10), r.map10)
            cells.append(" ".join(f"{v:>{len(m)}.3f}" for v, m in zip(values, measures)))
        lines.append(f"{lang:<4}  " + " | ".join(cells) + "  " + label_query(report.results[0].label, lang))
    return "\n".join(lines)


def model_comparison_table(rows: list[tuple[str, float | None, EvalReport]]) -> str:
    """``eval --models``: one row per model, ``(name, images/s or None when nothing was indexed, report)``."""
    lines = [f"{'model':<36} {'images/s':>9} {'recall@1':>9} {'recall@5':>9} {'recall@10':>9} {'mAP@10':>7}"]
    for name, rate, report in rows:
        shown = f"{rate:.1f}" if rate else "indexed"
        lines.append(f"{name:<36} {shown:>9} {report.recall(1):>9.3f} {report.recall(5):>9.3f} "
                     f"{report.recall(10):>9.3f} {report.map10:>7.3f}")
    lines.append("images/s: this run's indexing ('indexed': already in its collection, nothing encoded)")
    return "\n".join(lines)
