"""Interrupted ingestion loses nothing: kill -9, then Ctrl-C, then the same command finishes the job."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import ROOT, shapes_folder, textimg_command
from textimg_helpers.config import SHAPES_MODEL_NAME, default_collection
from textimg_helpers.milvus import connect

N_IMAGES = 160  # 4 per class


class Indexing:
    """``textimg index`` in its own process group (a terminal's Ctrl-C reaches the whole group)."""

    started: list[int] = []  # process group ids, for clean-up

    def __init__(self, *argv):
        self.proc = subprocess.Popen(textimg_command("index", *argv), cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.started.append(self.proc.pid)
        self.err, self.progress, self.total = b"", 0, None
        self.reader = threading.Thread(target=self._read_stderr, daemon=True)
        self.reader.start()

    def _read_stderr(self) -> None:
        while chunk := self.proc.stderr.read1(4096):
            self.err += chunk
            if counts := re.findall(rb"(\d+)/(\d+) \[", self.err):  # tqdm: "indexing: 25%|.. 40/160 [.."
                self.progress, self.total = int(counts[-1][0]), int(counts[-1][1])

    def wait_for_progress(self, images: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.progress < images:
            assert self.proc.poll() is None, f"finished before the interruption:\n{self.err.decode()}"
            assert time.monotonic() < deadline, f"no progress after {timeout}s:\n{self.err.decode()}"
            time.sleep(0.02)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Wait for the process and anything it left behind holding its pipes (the Milvus Lite server)."""
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout)
        self.reader.join(timeout)
        return code, out.decode(), self.err.decode().replace("\r", "\n")


def test_killed_then_interrupted_run_is_completed_by_running_again(tmp_path):
    images = shapes_folder(tmp_path / "images", per_class=4)
    uri = tmp_path / "milvus.db"
    argv = (images, "--uri", uri, "--batch-size", 4, "--write-every", 8)

    killed = Indexing(*argv)
    killed.wait_for_progress(40)
    os.kill(killed.proc.pid, signal.SIGKILL)  # like the OOM killer: the process alone, no clean-up
    assert killed.proc.wait(60) == -signal.SIGKILL  # its Milvus Lite server is left to stop by itself

    interrupted = Indexing(*argv)
    interrupted.wait_for_progress(8)
    written_before = N_IMAGES - interrupted.total  # what the killed run had written
    assert 0 < written_before < N_IMAGES
    os.killpg(interrupted.proc.pid, signal.SIGINT)  # Ctrl-C in a terminal
    code, out, err = interrupted.finish()
    assert code == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("textimg: interrupted; what was written is kept, run the same "
                                            "command again to continue")

    rerun = Indexing(*argv)
    code, out, err = rerun.finish()
    assert code == 0, err
    summary = dict(re.findall(r"(\w+)=(\d+)", out.strip().splitlines()[-1]))
    assert int(summary["total"]) == N_IMAGES and summary["skipped"] == "0"
    assert int(summary["unchanged"]) > written_before  # the Ctrl-C run kept what it had encoded
    assert int(summary["indexed"]) + int(summary["unchanged"]) == N_IMAGES

    client = connect(str(uri))
    rows = client.query(default_collection(SHAPES_MODEL_NAME), filter="", output_fields=["filepath"],
                        limit=1000)
    paths = [row["filepath"] for row in rows]
    assert len(paths) == len(set(paths)) == N_IMAGES
    assert set(paths) == {str(p) for p in images.iterdir()}
    client.close()



@pytest.fixture(autouse=True)
def _kill_leftovers():
    """Never leave a started process group running, even when an assertion fails half-way."""
    yield
    while Indexing.started:
        try:
            os.killpg(Indexing.started.pop(), signal.SIGKILL)
        except ProcessLookupError:
            pass
