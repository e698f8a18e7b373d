"""Measured quality: recall@k and mAP@10 per label, from the CLI and the helper."""

import re

import pytest

from conftest import run_textimg
from textimg_helpers.data import shapes_images
from textimg_helpers.evaluate import average_precision, labelled_images

METRICS = re.compile(r"^recall@1=([\d.]+) recall@5=([\d.]+) recall@10=([\d.]+) mAP@10=([\d.]+)$")


def test_average_precision_counts_each_relevant_rank():
    assert average_precision([True, False, True], n_relevant=2) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision([False] * 10, n_relevant=3) == 0.0
    assert average_precision([True] * 10, n_relevant=50) == 1.0  # capped at min(k, n_relevant)


def test_labels_come_from_subfolders_or_file_names(tmp_path):
    (tmp_path / "train" / "golden_retriever").mkdir(parents=True)
    (tmp_path / "flat").mkdir()
    for name in ("a.jpg", "b.JPEG"):
        (tmp_path / "train" / "golden_retriever" / name).write_bytes(b"x")
    (tmp_path / "flat" / "n01440764_tench.JPEG").write_bytes(b"x")
    (tmp_path / "flat" / "red_circle_0003.png").write_bytes(b"x")
    assert labelled_images(tmp_path / "train") == {"golden_retriever": 2}
    assert labelled_images(tmp_path / "flat") == {"tench": 1, "red_circle": 1}


def run_eval(folder, work, *extra, quiet=True):
    """``textimg eval FOLDER`` in a real process, with its Milvus Lite file in ``work``."""
    return run_textimg("eval", folder, *extra, *(["-q"] if quiet else []), env={"TEXTIMG_DATA_DIR": str(work)})


def test_eval_on_generated_shapes_meets_the_quality_floor(tmp_path):
    folder = shapes_images(tmp_path, per_class=4, seed=99)
    out = run_eval(folder, tmp_path)
    assert out.code == 0, out.err
    recall1, recall5, recall10, map10 = map(float, METRICS.match(out.out.strip().splitlines()[-1]).groups())
    assert recall1 >= 0.9 and map10 >= 0.9, out.out
    assert "labels=40 images=160" in out.out
    assert "worst labels:" in out.out
    assert "(collection textimg_shapes_clip_eval)" in out.err
    stats = [run_textimg("stats", *extra, env={"TEXTIMG_DATA_DIR": str(tmp_path)})
             for extra in ([], ["--collection", "textimg_shapes_clip_eval"])]
    assert "no collection named 'textimg_shapes_clip'" in stats[0].err  # your photos' collection: untouched
    assert stats[1].out.strip() == "rows=160 model=shapes-clip dim=128"


def test_eval_compare_shows_three_template_sets_and_random_weights_are_flagged(tmp_path):
    folder = shapes_images(tmp_path, per_class=2, seed=7)
    out = run_eval(folder, tmp_path, "--compare", "--random-weights")
    assert out.code == 0, out.err
    rows = {line.split(":")[0].strip(): line for line in out.out.strip().splitlines()}
    assert set(rows) == {"label", "photo", "ensemble"}
    assert "random-weights model: expect chance-level figures" in out.err
    map10 = float(rows["photo"].split("mAP@10=")[1])
    assert map10 < 0.5  # random weights really are bad: the metric can fail


def test_bad_template_is_refused(tmp_path):
    out = run_eval(tmp_path, tmp_path, "--template", "a photo")
    assert out.code == 1 and "--template needs a {}" in out.err


def test_eval_shows_progress_for_indexing_and_for_each_template_set(tmp_path):
    folder = shapes_images(tmp_path, per_class=1, seed=5)
    out = run_eval(folder, tmp_path, "--compare", quiet=False)
    assert out.code == 0, out.err
    bars = out.err.replace("\r", "\n")
    for desc in ("indexing", "evaluating bare labels", "evaluating 'a photo of a {}'", "evaluating 10 templates"):
        assert re.search(rf"^{re.escape(desc)}: .* 40/40 \[.*/s(, [^\]]+)?\]", bars, re.M), (desc, bars)  # postfix: read as
    assert set(line.split(":")[0].strip() for line in out.out.strip().splitlines()) == {"label", "photo", "ensemble"}


def test_eval_lang_prints_one_row_per_language_and_each_meets_the_floor(tmp_path):
    folder = shapes_images(tmp_path, per_class=4, seed=99)
    out = run_eval(folder, tmp_path, "--lang", "en,de,pt,ru,ar")
    assert out.code == 0, out.err
    lines = out.out.strip().splitlines()
    assert lines[0] == "lang  recall@1 recall@5 recall@10 mAP@10  example query"
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == ["en", "de", "pt", "ru", "ar"], out.out
    for lang, row in rows.items():
        recall1, recall5, recall10, map10 = map(float, row[1:5])
        assert recall1 >= 0.9 and map10 >= 0.9, (lang, out.out)
    assert " ".join(rows["de"][5:]) == "ein Foto von einem schwarzen Kreis"
    assert " ".join(rows["ru"][5:]) == "фотография чёрного круга"


def test_eval_lang_refuses_unknown_languages_and_labels_it_cannot_phrase(tmp_path):
    out = run_eval(tmp_path, tmp_path, "--lang", "de,fr")
    assert out.code == 1 and "unknown language fr: use one or several of en,de,pt,ru,ar" in out.err
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "n01440764_tench.JPEG").write_bytes(b"x")
    out = run_eval(tmp_path / "photos", tmp_path, "--lang", "en,ru")
    assert out.code == 1 and "--lang ru: the label 'tench' is not in the language table" in out.err
    assert not (tmp_path / "milvus.db").exists()  # refused before any work


def test_language_table_puts_two_text_models_side_by_side():
    from textimg_helpers.evaluate import EvalReport, LabelResult, language_table

    def report(first_rank, ap10):
        return EvalReport(("q",), [LabelResult("red_circle", 5, first_rank, ap10)], 5)

    table = language_table({"multilingual": {"en": report(1, 1.0), "de": report(1, 0.8)},
                            "ViT-B/32 text encoder": {"en": report(1, 1.0), "de": report(7, 0.1)}})
    assert table.splitlines() == [
        "      multilingual                       | ViT-B/32 text encoder             ",
        "lang  recall@1 recall@5 recall@10 mAP@10 | recall@1 recall@5 recall@10 mAP@10  example query",
        "en       1.000    1.000     1.000  1.000 |    1.000    1.000     1.000  1.000  a photo of a red circle",
        "de       1.000    1.000     1.000  0.800 |    0.000    0.000     1.000  0.100  ein Foto von einem roten Kreis",
    ]


def test_evaluate_in_a_language_asks_the_encoder_for_that_languages_queries(tmp_path, shapes_encoder):
    from textimg_helpers.evaluate import evaluate
    from textimg_helpers.ingest import index_folder
    from textimg_helpers.languages import query_for
    from textimg_helpers.milvus import connect

    class Recording:
        """The shapes encoder, noting every text it is asked to encode."""
        name, texts = "recording", []

        def encode_texts(self, texts):
            self.texts += list(texts)
            return shapes_encoder.encode_texts(texts)

    folder = shapes_images(tmp_path, per_class=2, seed=11)
    client = connect(str(tmp_path / "m.db"))
    index_folder(client, "eval", folder, shapes_encoder, progress=False, num_workers=0)
    encoder = Recording()
    report = evaluate(client, "eval", encoder, folder, lang="ru", progress=False)
    client.close()
    labels = sorted(labelled_images(folder))
    assert encoder.texts == [query_for(label, "ru") for label in labels]
    assert "фотография красного круга" in encoder.texts and report.templates == ("фотография {gen}",)
    assert report.recall(1) >= 0.9 and report.map10 >= 0.9, report.summary()
