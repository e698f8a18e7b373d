"""--text-model multilingual, tested offline with a tiny sentence-transformers model built here.

The tiny model has the real one's layout (a BERT-style transformer, mean pooling, a dense layer to 512)
with random weights and a WordPiece vocabulary generated from the language table, saved to a temporary
folder: nothing is downloaded. Its vectors mean nothing, but the same text always gives the same vector,
so a row stored with a text's vector is found first by that text, with a cosine of 1.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pytest

from textimg_helpers.config import Settings, TextimgError
from textimg_helpers.milvus import connect
from textimg_helpers.store import create_collection, upsert_rows, path_id

pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed: "
                    "pip install 'textimg-helpers[multilingual]'")

LABELS = ("red_circle", "blue_square", "yellow_star", "black_cross")
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def build_tiny_model(folder: Path) -> Path:
    """A sentence-transformers model with random weights (hidden size 32, one layer) -> 512-d, in ``folder``."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from textimg_helpers.languages import LANGS, captions
    from textimg_helpers.shapes import CLASS_NAMES

    words = sorted({w.lower() for lang in LANGS for label in CLASS_NAMES for c in captions(label, lang) for w in c.split()})
    chars = sorted({ch for word in words for ch in word} - set(words))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *chars, *("##" + ch for ch in chars)]
    bert = folder / "bert"
    bert.mkdir(parents=True)
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(str(bert / "vocab.txt"), do_lower_case=True, strip_accents=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    modules = [models.Transformer(str(bert), max_seq_length=32), models.Pooling(32, "mean"),
               models.Dense(32, 512, activation_function=torch.nn.Identity())]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder / "tiny"))
    return folder / "tiny"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """The folder of the tiny model, built once (no network: the hub is switched off meanwhile)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in OFFLINE.items():
            mp.setenv(key, value)
        yield build_tiny_model(tmp_path_factory.mktemp("text-model"))


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from textimg_helpers.multilingual import load_text_encoder

    return load_text_encoder(str(tiny_model), device="cpu")


@pytest.fixture
def photos(tmp_path, tiny):
    """A Milvus Lite file with a ViT-B/32 collection ``photos``: one row per label, whose vector is the tiny
    model's vector of the label's Russian phrase (standing in for a photo of it)."""
    from textimg_helpers.languages import query_for

    db = tmp_path / "milvus.db"
    client = connect(str(db))
    create_collection(client, "photos", 512, "ViT-B/32")
    vectors = tiny.encode_texts([query_for(label, "ru", "{nom}") for label in LABELS])
    upsert_rows(client, "photos", [dict(id=path_id(f"/photos/{label}.jpg"), filepath=f"/photos/{label}.jpg",
                                        label=label, size=1, mtime=1, vector=vector.tolist())
                                   for label, vector in zip(LABELS, vectors)])
    create_collection(client, "shapes", 128, "shapes-clip")
    create_collection(client, "vit_b_16", 512, "ViT-B/16")
    client.close()
    return db


def test_tiny_model_gives_512d_unit_vectors_the_same_each_time(tiny):
    texts = ["красный круг", "ein roter Kreis", "دائرة حمراء", "um círculo vermelho", "a red circle"]
    text_embs = tiny.encode_texts(texts)
    assert text_embs.shape == (5, 512) and text_embs.dtype == np.float32 and tiny.dim == 512
    np.testing.assert_allclose(np.linalg.norm(text_embs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(tiny.encode_texts(["красный круг"])[0], text_embs[0], atol=1e-6)
    assert np.max(text_embs[1:] @ text_embs[0]) < 0.999  # different texts, different vectors
    assert tiny.image_model == "ViT-B/32" and tiny.name == "tiny"


def test_empty_query_is_refused_and_long_query_warns(tiny):
    with pytest.raises(TextimgError, match="query is empty"):
        tiny.encode_texts(["  "])
    with pytest.warns(UserWarning, match="the text model reads only the first 32"):
        assert tiny.encode_texts(["красный круг " * 40]).shape == (1, 512)


def test_search_in_russian_finds_the_row_of_that_phrase_first(cli, photos, tiny_model):
    run = cli("search", "красный круг", "--text-model", tiny_model, "--profile", "clip", "--uri", photos,
              "--collection", "photos", "--json", "-k", "2")
    assert run.code == 0, run.err
    hits = json.loads(run.out)
    assert hits[0]["label"] == "red_circle" and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert len(hits) == 2 and hits[1]["score"] < 0.999
    plain = cli("search", "синий квадрат", "--text-model", tiny_model, "--profile", "clip", "--uri", photos,
                "--collection", "photos", "-k", "1")
    assert plain.code == 0 and plain.out.strip() == "1.000  /photos/blue_square.jpg", plain.out + plain.err


def test_the_setting_chooses_the_text_model_like_the_option(cli, photos, tiny_model, monkeypatch):
    monkeypatch.setenv("TEXTIMG_TEXT_MODEL", str(tiny_model))
    assert Settings.from_env().text_model == str(tiny_model)
    run = cli("search", "жёлтая звезда", "--profile", "clip", "--uri", photos, "--collection", "photos", "-k", "1")
    assert run.code == 0 and run.out.strip() == "1.000  /photos/yellow_star.jpg", run.out + run.err


@pytest.mark.parametrize("collection, built", [("shapes", "shapes-clip (dim 128)"), ("vit_b_16", "ViT-B/16 (dim 512)")])
def test_a_collection_of_another_image_model_refuses_it(cli, photos, tiny_model, tiny, collection, built):
    run = cli("search", "красный круг", "--text-model", tiny_model, "--profile", "clip", "--uri", photos,
              "--collection", collection)
    assert run.code == 1 and run.out == ""
    assert run.last_err == (f"textimg: error: collection '{collection}' was built with model {built}, not ViT-B/32: "
                            "use another collection name (--collection) or rebuild it (textimg drop, then index again)")
    from textimg_helpers.widgets import SearchPanel

    client = connect(str(photos))
    try:
        with pytest.raises(TextimgError, match=f"was built with model {built.split()[0]}"):
            SearchPanel(client, collection, None, text_encoder=tiny)
    finally:
        client.close()


def test_eval_refuses_a_text_model_for_images_of_another_model(cli, tmp_path, tiny_model):
    from textimg_helpers.data import shapes_images

    folder = shapes_images(tmp_path, per_class=1)
    run = cli("eval", folder, "--text-model", tiny_model, "--profile", "shapes", "--uri", tmp_path / "m.db", "-q")
    assert run.code == 1 and "reads queries into ViT-B/32's space, but the images would be encoded with shapes-clip" in run.last_err
    assert not (tmp_path / "m.db").exists()  # refused before any work


def test_the_panel_searches_with_the_text_encoder(photos, tiny):
    from textimg_helpers.widgets import SearchPanel

    client = connect(str(photos))
    try:
        panel = SearchPanel(client, "photos", None, text_encoder=tiny)
        panel.query.value = "чёрный крест"
        panel.k.value = 1
        panel.submit.click()
        assert [hit.label for hit in panel.hits] == ["black_cross"], panel.status.value
        assert "top 1 for 'чёрный крест'" in html.unescape(panel.status.value)
    finally:
        client.close()


def test_offline_and_not_cached_says_what_to_do(cli, photos, tmp_path, monkeypatch):
    """No network (the reachability check says so) and an empty cache: one line, and the fix."""
    import textimg_helpers.multilingual as multilingual

    calls = []
    monkeypatch.setattr(multilingual, "host_reachable", lambda host, *a, **k: calls.append(host) or False)
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # read when it was imported
    cache = tmp_path / "empty-cache" / "models--sentence-transformers--clip-ViT-B-32-multilingual-v1"
    expected = (f"cannot download the multilingual text model sentence-transformers/clip-ViT-B-32-multilingual-v1 "
                f"(huggingface.co is unreachable: no internet?) and it is not cached at {cache}; run once with "
                "internet to cache it, or search offline with TEXTIMG_PROFILE=shapes (its model reads en, de, pt, "
                "ru, ar) and --text-model clip")
    with pytest.raises(TextimgError) as caught:
        multilingual.load_text_encoder("multilingual", device="cpu")
    assert str(caught.value) == expected and calls == ["huggingface.co"]
    run = cli("search", "красный круг", "--text-model", "multilingual", "--profile", "clip", "--uri", photos,
              "--collection", "photos")
    assert run.code == 1 and run.last_err == "textimg: error: " + expected


def test_without_sentence_transformers_the_install_command_is_named(monkeypatch):
    import sys

    from textimg_helpers.multilingual import load_text_encoder

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails as if not installed
    with pytest.raises(TextimgError, match=r"needs the sentence-transformers package .*pip install 'textimg-helpers\[multilingual\]'"):
        load_text_encoder("multilingual")


def test_an_unknown_text_model_is_refused_before_any_work(cli, tmp_path):
    with pytest.raises(TextimgError, match="text model 'klingon' is neither clip nor multilingual nor a folder"):
        Settings(text_model="klingon")
    run = cli("search", "a red circle", "--text-model", "klingon", "--uri", tmp_path / "none.db")
    assert run.code == 1 and "text model 'klingon' is neither" in run.last_err


def fake_hub_cache(cache: Path, model_folder: Path) -> Path:
    """The Hugging Face hub cache layout (refs/main -> snapshots/<revision>/...) holding the tiny model as if
    it were the downloaded multilingual one."""
    import shutil

    repo = cache / "models--sentence-transformers--clip-ViT-B-32-multilingual-v1"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(model_folder, repo / "snapshots" / ("0" * 40))
    return repo


def test_a_cached_model_loads_without_asking_the_network(tmp_path, tiny_model, monkeypatch):
    import textimg_helpers.multilingual as multilingual

    fake_hub_cache(tmp_path / "cache", tiny_model)
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(multilingual, "host_reachable", lambda *a, **k: pytest.fail("the network was asked"))
    encoder = multilingual.load_text_encoder("multilingual", device="cpu")
    assert encoder.name == "clip-ViT-B-32-multilingual-v1" and encoder.encode_texts(["красный круг"]).shape == (1, 512)


def test_a_corrupt_cached_model_names_the_folder_to_delete(tmp_path, tiny_model, monkeypatch):
    import textimg_helpers.multilingual as multilingual

    repo = fake_hub_cache(tmp_path / "cache", tiny_model)
    (repo / "snapshots" / ("0" * 40) / "model.safetensors").write_bytes(b"half a download")
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(multilingual, "host_reachable", lambda *a, **k: False)
    with pytest.raises(TextimgError, match=rf"could not load the text model from {repo} \(.*\); the files look "
                                           rf"corrupt or incomplete: delete {repo} and run again"):
        multilingual.load_text_encoder("multilingual", device="cpu")
