"""Settings come from TEXTIMG_* variables, with defaults, and never show the token."""

import os
import subprocess
import sys
import tempfile

import pytest

from conftest import ROOT
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


def test_the_tests_see_only_their_own_settings():
    """conftest.py sets these (a temporary data folder, the offline profile) and clears every other one."""
    own = {"TEXTIMG_PROFILE": "shapes", "TEXTIMG_SERVICE_IDLE": "300"}
    seen = {key: value for key, value in os.environ.items() if key.startswith("TEXTIMG_")}
    seen.pop("TEXTIMG_TEST_MODEL", None), seen.pop("TEXTIMG_MODEL", None)  # the suite run with another model
    data_dir = seen.pop("TEXTIMG_DATA_DIR")
    assert seen == own
    assert os.path.basename(data_dir).startswith("textimg-test-data-")
    assert os.path.dirname(data_dir) == tempfile.gettempdir()


def test_a_callers_textimg_settings_never_reach_the_tests(tmp_path):
    """A developer's shell: their photos, their server, bf16 on, the real CLIP profile."""
    caller = {"TEXTIMG_MY_FOLDER": str(tmp_path / "my photos"), "TEXTIMG_BF16": "1", "TEXTIMG_PROFILE": "clip",
              "TEXTIMG_MILVUS_URI": "http://192.0.2.1:19530", "TEXTIMG_DATA_DIR": str(tmp_path / "mine")}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          f"{__file__}::test_the_tests_see_only_their_own_settings"], cwd=ROOT,
                         env={**os.environ, **caller, "TMPDIR": str(tmp_path)}, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout[-3000:]
