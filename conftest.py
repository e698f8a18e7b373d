"""Test-wide settings: offline shapes profile, a temporary data folder, no Milvus server or token.

Set here (before any notebook kernel starts) so that nbval's kernels inherit them too.
"""

import os
import shutil
import tempfile

import matplotlib

matplotlib.use("Agg")

_DATA_DIR = tempfile.mkdtemp(prefix="textimg-test-data-")


def pytest_configure(config):
    os.environ["TEXTIMG_PROFILE"] = "shapes"
    os.environ["TEXTIMG_DATA_DIR"] = _DATA_DIR
    os.environ["MPLBACKEND"] = "Agg"
    for key in ("TEXTIMG_MILVUS_URI", "TEXTIMG_MILVUS_TOKEN", "TEXTIMG_MODEL", "TEXTIMG_COLLECTION",
                "TEXTIMG_DEVICE", "TEXTIMG_TEXT_MODEL"):
        os.environ.pop(key, None)
    if os.environ.get("TEXTIMG_TEST_MODEL"):  # lets a test run the suite with another checkpoint
        os.environ["TEXTIMG_MODEL"] = os.environ["TEXTIMG_TEST_MODEL"]


def pytest_unconfigure(config):
    shutil.rmtree(_DATA_DIR, ignore_errors=True)
