"""Choosing a model: open_clip ``ARCH/PRETRAINED`` models beside OpenAI's, ``textimg models`` and
``textimg eval --models``. Offline: open_clip architectures are built with random weights."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from conftest import SHAPES_COLLECTION, shapes_folder
from textimg_helpers import encoders, models
from textimg_helpers.config import TextimgError, check_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("open_clip") is None,
                                reason='open_clip is not installed (pip install -e ".[models]")')

OPEN_CLIP = "ViT-B-32/laion2b_s34b_b79k"
RANDOM_NAME = OPEN_CLIP + "+random"


@pytest.fixture(scope="module")
def indexed_open_clip(tmp_path_factory):
    """40 shapes indexed with open_clip's ViT-B-32 (random weights), and the same file's shapes collection."""
    from conftest import run_cli

    root = tmp_path_factory.mktemp("open_clip")
    folder, db = shapes_folder(root / "images", per_class=1), root / "m.db"
    run = run_cli("index", folder, "--uri", db, "--model", OPEN_CLIP, "--random-weights", "-q")
    assert run.code == 0 and run.summary["total"] == 40, run.err
    assert run_cli("index", folder, "--uri", db, "-q").summary["total"] == 40  # the shapes model's own collection
    return db, folder


def test_an_open_clip_model_indexes_and_searches_with_unit_vectors_of_its_dimension(cli, indexed_open_clip):
    from textimg_helpers.milvus import connect
    from textimg_helpers.store import collection_info

    db, _ = indexed_open_clip
    client = connect(str(db))
    try:
        collection = "textimg_vit_b_32_laion2b_s34b_b79k_random"
        assert collection_info(client, collection) == {"model": RANDOM_NAME, "dim": 512}
        rows = client.query(collection, filter="", output_fields=["vector"], limit=100)
        norms = np.linalg.norm(np.array([row["vector"] for row in rows]), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-4)
    finally:
        client.close()
    run = cli("search", "a red circle", "--uri", db, "--model", OPEN_CLIP, "--random-weights", "--json", "-k", "3")
    assert run.code == 0, run.err
    assert len(json.loads(run.out)) == 3


def test_a_collection_of_another_model_refuses_open_clip_queries(cli, indexed_open_clip):
    db, _ = indexed_open_clip
    run = cli("search", "a red circle", "--uri", db, "--model", OPEN_CLIP, "--random-weights",
              "--collection", SHAPES_COLLECTION)
    assert run.code == 1
    assert run.last_err.startswith(f"textimg: error: collection '{SHAPES_COLLECTION}' was built with model "
                                   f"shapes-clip (dim 128), not {RANDOM_NAME}"), run.err


def test_eval_models_prints_one_row_per_model(cli, tmp_path):
    folder = shapes_folder(tmp_path / "labelled", per_class=1)
    run = cli("eval", folder, "--models", f"shapes,{OPEN_CLIP}", "--uri", tmp_path / "m.db", "--random-weights",
              "-q", "--workers", "0")
    assert run.code == 0, run.err
    lines = run.out.strip().splitlines()
    assert lines[0].split() == ["model", "images/s", "recall@1", "recall@5", "recall@10", "mAP@10"]
    assert [line.split()[0] for line in lines[1:3]] == ["shapes-clip+random", RANDOM_NAME]
    assert all(0 <= float(x) <= 1 for line in lines[1:3] for x in line.split()[2:])
    again = cli("eval", folder, "--models", f"shapes,{OPEN_CLIP}", "--uri", tmp_path / "m.db", "--random-weights", "-q")
    assert [line.split()[1] for line in again.out.strip().splitlines()[1:3]] == ["indexed", "indexed"]  # incremental


def test_models_prints_published_quality_and_speed(cli):
    run = cli("models")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split()[:3] == ["model", "via", "dim"]
    rows = {line.split()[0]: line for line in lines[1:1 + len(models.MODELS)]}
    assert set(rows) == {m.name for m in models.MODELS}
    assert "the tutorial's model" in rows["ViT-B/32"] and "63.3%" in rows["ViT-B/32"] and " clip " in rows["ViT-B/32"]
    assert "65.4%" in rows[OPEN_CLIP] and " open_clip " in rows[OPEN_CLIP]
    assert any("openclip_results.csv" in line for line in lines)


def test_measured_speed_is_real_numbers(monkeypatch):
    from textimg_helpers.config import SHAPES_CHECKPOINT

    figures = models.measure_speed(str(SHAPES_CHECKPOINT), images=16, queries=3)
    assert figures["dim"] == 128 and figures["images_per_s"] > 0 and figures["query_ms"] > 0


def test_weights_that_cannot_be_downloaded_name_the_model_and_the_cache(monkeypatch):
    monkeypatch.setattr(encoders, "host_reachable", lambda host: False)
    with pytest.raises(TextimgError, match=rf"cannot download the weights or the tokenizer of open_clip {OPEN_CLIP} "
                                           r"\(no internet\?\) and they are not in the Hugging Face cache /"):
        encoders.load_encoder(OPEN_CLIP, device="cpu")


def test_unknown_names_are_one_line(monkeypatch):
    with pytest.raises(TextimgError, match="open_clip has no weights 'nosuch' for ViT-B-32: it has openai, "):
        encoders.load_encoder("ViT-B-32/nosuch", device="cpu", random_weights=True)
    with pytest.raises(TextimgError, match="open_clip has no architecture 'NoSuchNet'"):
        encoders.load_encoder("NoSuchNet/openai", device="cpu", random_weights=True)
    with pytest.raises(TextimgError, match="neither a CLIP name .* an open_clip ARCH/PRETRAINED pair"):
        check_model("resnet")
    monkeypatch.setitem(__import__("sys").modules, "open_clip", None)  # not installed
    with pytest.raises(TextimgError, match=r'pip install "textimg-helpers\[models\]"'):
        encoders.load_encoder(OPEN_CLIP, device="cpu", random_weights=True)


def test_the_multilingual_text_model_says_it_is_tied_to_vit_b_32(cli, tmp_path):
    run = cli("search", "ein roter Kreis", "--model", OPEN_CLIP, "--random-weights", "--text-model", "multilingual",
              "--uri", tmp_path / "m.db")
    assert run.code == 1
    assert "--text-model multilingual reads queries into OpenAI ViT-B/32's space only" in run.last_err, run.err


def test_a_stored_model_name_gives_back_what_to_load():
    from textimg_helpers.config import SHAPES_CHECKPOINT, model_for_name, model_name

    for model, random_weights in [("ViT-B/32", False), (OPEN_CLIP, True), (str(SHAPES_CHECKPOINT), True)]:
        assert model_for_name(model_name(model, random_weights)) == (model, random_weights)
    with pytest.raises(TextimgError, match="built with the checkpoint 'my_finetune': start with --model"):
        model_for_name("my_finetune")
