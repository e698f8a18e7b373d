"""Settings come from TEXTIMG_* variables, with defaults, and never show the token."""

import pytest

from textimg_helpers.config import (SHAPES_CHECKPOINT, Settings, TextimgError, default_collection,
                                    model_for_profile, model_name)
from textimg_helpers.session import resolve_profile


def test_defaults_use_a_lite_file_under_the_data_dir(tmp_path):
    settings = Settings.from_env({"TEXTIMG_DATA_DIR": str(tmp_path)})
    assert settings.profile == "auto"
    assert settings.uri == str(tmp_path / "milvus.db")
    assert settings.device == "auto"


def test_environment_overrides_every_field(tmp_path):
    env = {"TEXTIMG_PROFILE": "shapes", "TEXTIMG_MODEL": "ViT-B/16", "TEXTIMG_MILVUS_URI": "http://127.0.0.1:19530",
           "TEXTIMG_MILVUS_TOKEN": "root:Milvus", "TEXTIMG_DATA_DIR": str(tmp_path), "TEXTIMG_DEVICE": "cpu",
           "TEXTIMG_COLLECTION": "mine"}
    s = Settings.from_env(env)
    assert (s.profile, s.model, s.uri, s.milvus_token, s.data_dir, s.device, s.collection_name) == (
        "shapes", "ViT-B/16", "http://127.0.0.1:19530", "root:Milvus", tmp_path, "cpu", "mine")


def test_repr_never_shows_the_token():
    s = Settings.from_env({"TEXTIMG_MILVUS_TOKEN": "sekret-token-123"})
    assert "sekret-token-123" not in repr(s) and "sekret-token-123" not in str(s)


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(TextimgError, match="TEXTIMG_PROFILE='clipp' is not one of auto, clip, shapes"):
        Settings.from_env({"TEXTIMG_PROFILE": "clipp"})


def test_profiles_pick_models_and_names_that_never_mix():
    assert model_for_profile("clip", None) == "ViT-B/32"
    assert model_for_profile("shapes", None) == str(SHAPES_CHECKPOINT)
    assert model_for_profile("shapes", "/x/mine.pt") == "/x/mine.pt"
    assert model_name("ViT-B/32") == "ViT-B/32"
    assert model_name(str(SHAPES_CHECKPOINT)) == "shapes-clip"
    assert model_name("ViT-B/32", random_weights=True) == "ViT-B/32+random"
    assert default_collection("ViT-B/32") == "textimg_vit_b_32"
    assert default_collection("shapes-clip") != default_collection("shapes-clip+random")


def test_explicit_profile_is_used_without_any_network_check(tmp_path):
    said = []
    assert resolve_profile(Settings(profile="shapes", data_dir=tmp_path), announce=said.append) == "shapes"
    assert said == []
