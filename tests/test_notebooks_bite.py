"""The notebooks are their own tests: with a model that retrieves nothing, nbval must go red."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from textimg_helpers.config import SHAPES_CHECKPOINT
from textimg_helpers.encoders import random_model

ROOT = Path(__file__).resolve().parent.parent


def test_random_weights_of_the_same_shape_make_the_notebooks_fail(tmp_path):
    checkpoint = tmp_path / "random_shapes.pt"  # same architecture and size, random weights
    torch.save({k: v.half() if v.is_floating_point() else v
                for k, v in random_model(str(SHAPES_CHECKPOINT)).state_dict().items()}, checkpoint)
    env = {**os.environ, "TEXTIMG_TEST_MODEL": str(checkpoint)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                          "notebooks/03_search.ipynb", "notebooks/05_evaluation.ipynb"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout[-2000:]
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED notebooks/")]
    assert any("03_search" in line for line in failed) and any("05_evaluation" in line for line in failed)
