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
    for key in [key for key in os.environ if key.startswith("TEXTIMG_") and key != "TEXTIMG_TEST_MODEL"]:
        del os.environ[key]  # nothing from the caller's environment: not their photos, not their server
    os.environ["TEXTIMG_PROFILE"] = "shapes"
    os.environ["TEXTIMG_DATA_DIR"] = _DATA_DIR
    os.environ["TEXTIMG_SERVICE_IDLE"] = "300"  # a Milvus Lite service a test leaves behind stops soon
    os.environ["MPLBACKEND"] = "Agg"
    if os.environ.get("TEXTIMG_TEST_MODEL"):  # lets a test run the suite with another checkpoint
        os.environ["TEXTIMG_MODEL"] = os.environ["TEXTIMG_TEST_MODEL"]


def pytest_unconfigure(config):
    from textimg_helpers.service.client import stop_services_under

    stop_services_under(_DATA_DIR)  # the notebooks' (nbval's kernels are gone, their service is not)
    shutil.rmtree(_DATA_DIR, ignore_errors=True)
