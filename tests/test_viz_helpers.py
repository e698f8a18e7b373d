"""The plotting helpers the notebooks call in one line: what a reader sees in each figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from textimg_helpers.evaluate import EvalReport, LabelResult  # noqa: E402
from textimg_helpers.hits import Hit  # noqa: E402
from textimg_helpers.viz import plot_measures, show_images, show_relevance, show_similarity  # noqa: E402

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


@pytest.fixture
def coloured_files(tmp_path):
    """One plain image per colour, named after it, in a known order (not the alphabetical one)."""
    paths = []
    for name in ("green", "red", "blue", "red"):
        path = tmp_path / f"{name}_{len(paths)}.png"
        Image.new("RGB", (40, 30), COLOURS[name]).save(path)
        paths.append(path)
    return paths


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def drawn_colour(ax) -> str:
    """The colour name nearest the mean colour of the picture drawn in ``ax``."""
    mean = np.asarray(ax.images[0].get_array(), dtype=float).reshape(-1, 3).mean(axis=0)
    return min(COLOURS, key=lambda name: np.linalg.norm(mean - COLOURS[name]))


def test_show_images_draws_each_file_in_order_under_its_label(coloured_files):
    labels = [path.stem.split("_")[0] for path in coloured_files]
    fig = show_images(coloured_files, labels, ncols=3)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 6 and len(shown) == 4  # two rows of three, the last two cells empty
    assert [ax.get_title() for ax in shown] == labels == ["green", "red", "blue", "red"]
    assert [drawn_colour(ax) for ax in shown] == labels


def test_show_relevance_frames_relevant_hits_green_and_counts_precision(coloured_files):
    ranked = [coloured_files[i] for i in (1, 0, 3, 2)]  # red, green, red, blue
    hits = [Hit(str(path), path.stem.split("_")[0], 0.9 - i / 10, i) for i, path in enumerate(ranked)]
    fig = show_relevance(hits, "red", ncols=4)
    frames = [mcolors.to_hex(ax.spines["left"].get_edgecolor()) for ax in fig.axes]
    green, red = mcolors.to_hex("tab:green"), mcolors.to_hex("tab:red")
    assert frames == [green, red, green, red]  # relevant = label "red": ranks 1 and 3
    assert [ax.get_xlabel().splitlines()[1] for ax in fig.axes] == [
        "#1: precision 1/1", "#2: precision 1/2", "#3: precision 2/3", "#4: precision 2/4"]
    assert [drawn_colour(ax) for ax in fig.axes] == ["red", "green", "red", "blue"]


def report(recall1: float, map10: float) -> EvalReport:
    """A report of ten labels: ``recall1`` of them right at rank 1 (the others at rank 7), AP@10 ``map10`` each."""
    right = round(recall1 * 10)
    results = [LabelResult(f"l{i}", 5, 1 if i < right else 7, map10) for i in range(10)]
    return EvalReport(("{}",), results, 50)


def test_plot_measures_draws_one_bar_per_measure_and_report_at_its_value():
    reports = {"label": report(0.8, 0.75), "photo": report(0.9, 0.5), "ensemble": report(1.0, 0.25)}
    fig = plot_measures(reports, ["recall@1", "recall@10", "mAP@10"], title="query templates")
    ax = fig.axes[0]
    assert ax.get_title() == "query templates"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["label", "photo", "ensemble"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["recall@1", "recall@10", "mAP@10"]
    heights = [[round(bar.get_height(), 3) for bar in bars] for bars in ax.containers]
    assert heights == [[0.8, 0.9, 1.0], [1.0, 1.0, 1.0], [0.75, 0.5, 0.25]]
    bar_texts = [t.get_text() for t in ax.texts]
    assert bar_texts[:3] == ["0.80", "0.90", "1.00"]


def test_show_similarity_puts_each_value_in_its_row_and_column():
    similarity = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.05]])  # 2 images x 3 captions
    fig = show_similarity(similarity, ["image: a", "image: b"], ["a", "b", "c"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["image: a", "image: b"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    printed = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert printed == {(0, 0): "0.90", (0, 1): "0.10", (0, 2): "0.20", (1, 0): "0.30", (1, 1): "0.80", (1, 2): "0.05"}
    assert np.array_equal(ax.images[0].get_array(), similarity)  # the colours follow the same cells
