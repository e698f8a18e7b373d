"""The CLI contract, end to end in real subprocesses, on generated images and Milvus Lite."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from textimg_helpers.data import shapes_images

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^indexed=(\d+) skipped=(\d+) unchanged=(\d+) total=(\d+)$")


def textimg(*args, cwd, env_extra=None):
    env = {**os.environ, "TEXTIMG_PROFILE": "shapes", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "textimg_helpers", *args, "-q"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """120 shapes images (3 per class) indexed once into a Lite file of their own."""
    work = tmp_path_factory.mktemp("cli")
    folder = shapes_images(work / "data", per_class=3)
    env = {"TEXTIMG_DATA_DIR": str(work / "data")}
    first = textimg("index", str(folder), "--batch-size", "16", cwd=work, env_extra=env)
    return work, folder, env, first


def snapshot(text, folder):
    return re.sub(r"\d\.\d{3}", "S", text.replace(str(folder), "<DIR>"))


def test_index_prints_the_summary_line_last(indexed):
    work, folder, env, first = indexed
    assert first.returncode == 0, first.stderr
    assert SUMMARY.match(first.stdout.strip().splitlines()[-1]).groups() == ("120", "0", "0", "120")


def test_unchanged_rerun_indexes_nothing_and_loads_no_model(indexed):
    work, folder, env, _ = indexed
    garbage = work / "shapes-clip.pt"  # same model name, but loading it would fail loudly
    garbage.write_bytes(b"not a checkpoint")
    again = textimg("index", str(folder), "--model", str(garbage), "--collection", "textimg_shapes_clip",
                    cwd=work, env_extra=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == "indexed=0 skipped=0 unchanged=120 total=120"


def test_search_prints_score_and_path_best_first(indexed):
    work, folder, env, _ = indexed
    out = textimg("search", "a red circle", "-k", "3", cwd=work, env_extra=env)
    assert out.returncode == 0, out.stderr
    lines = snapshot(out.stdout, folder).splitlines()
    assert sorted(lines) == [f"S  <DIR>/red_circle_000{i}.png" for i in range(3)]
    scores = [float(line.split()[0]) for line in out.stdout.splitlines()]
    assert scores == sorted(scores, reverse=True)


def test_search_json_is_only_a_json_list_best_first(indexed):
    work, folder, env, _ = indexed
    out = textimg("search", "a blue square", "-k", "5", "--json", cwd=work, env_extra=env)
    hits = json.loads(out.stdout)
    assert len(hits) == 5 and all({"filepath", "score"} <= set(h) for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert [Path(h["filepath"]).name.startswith("blue_square") for h in hits[:3]] == [True] * 3


def test_stats_line(indexed):
    work, folder, env, _ = indexed
    out = textimg("stats", cwd=work, env_extra=env)
    assert out.stdout.strip() == "rows=120 model=shapes-clip dim=" + out.stdout.strip().split("dim=")[1]
    assert int(out.stdout.strip().split("dim=")[1]) > 0


def test_errors_are_one_line_without_traceback(indexed):
    work, folder, env, _ = indexed
    out = textimg("search", "a dog", "--collection", "nope", cwd=work, env_extra=env)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("textimg: error: no collection named 'nope'")
    assert "Traceback" not in out.stderr


def test_demo_ends_with_ten_red_circles_and_a_grid(tmp_path):
    out = textimg("demo", cwd=tmp_path, env_extra={"TEXTIMG_DATA_DIR": str(tmp_path / "data")})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "top 10 for 'a red circle':"
    names = [Path(line.split("  ", 1)[1]).name for line in lines[1:]]
    assert len(names) == 10 and all(n.startswith("red_circle_") for n in names), names
    assert (tmp_path / "outputs" / "demo_grid.png").stat().st_size > 10_000


def test_similar_returns_the_photo_itself_first_and_writes_a_grid(indexed):
    work, folder, env, _ = indexed
    photo = folder / "green_star_0001.png"
    out = textimg("similar", str(photo), "-k", "4", "--json", "--grid", "similar.png", cwd=work, env_extra=env)
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert hits[0]["filepath"] == str(photo) and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert all(Path(h["filepath"]).name.startswith("green_star") for h in hits[:3])
    assert (work / "similar.png").stat().st_size > 5_000


def test_where_filter_reaches_milvus(indexed):
    work, folder, env, _ = indexed
    out = textimg("search", "a red circle", "-k", "5", "--json", "--where", 'label == "blue_cross"',
                  cwd=work, env_extra=env)
    assert out.returncode == 0, out.stderr
    assert {h["label"] for h in json.loads(out.stdout)} == {"blue_cross"}


def test_drop_asks_for_yes_then_deletes_only_that_collection(tmp_path):
    folder = shapes_images(tmp_path / "data", per_class=1)
    env = {"TEXTIMG_DATA_DIR": str(tmp_path / "data")}
    uri = str(tmp_path / "drop.db")
    for collection in ("keep_me", "drop_me"):
        run = textimg("index", str(folder), "--uri", uri, "--collection", collection, cwd=tmp_path, env_extra=env)
        assert run.returncode == 0, run.stderr

    refused = textimg("drop", "--uri", uri, "--collection", "drop_me", cwd=tmp_path, env_extra=env)
    assert refused.returncode == 1
    assert refused.stderr.strip() == ("textimg: error: dropping deletes every row of 'drop_me': "
                                      "add --yes to confirm")
    assert textimg("stats", "--uri", uri, "--collection", "drop_me", cwd=tmp_path,
                   env_extra=env).stdout.startswith("rows=40 ")

    dropped = textimg("drop", "--yes", "--uri", uri, "--collection", "drop_me", cwd=tmp_path, env_extra=env)
    assert dropped.returncode == 0 and dropped.stdout.strip() == "dropped drop_me"
    gone = textimg("stats", "--uri", uri, "--collection", "drop_me", cwd=tmp_path, env_extra=env)
    assert gone.returncode == 1 and "no collection named 'drop_me' (existing: keep_me)" in gone.stderr
    kept = textimg("stats", "--uri", uri, "--collection", "keep_me", cwd=tmp_path, env_extra=env)
    assert kept.stdout.strip() == "rows=40 model=shapes-clip dim=128"


def test_json_stdout_stays_clean_when_milvus_refuses_a_filter(indexed):
    work, folder, env, _ = indexed
    out = textimg("search", "a red circle", "--json", "--where", 'label = = "x', cwd=work, env_extra=env)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().startswith("textimg: error: Milvus refused the search with filter")
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr  # Milvus Lite's own lines go to its log


def test_grid_names_what_it_wrote_and_refuses_an_unknown_format_before_searching(indexed):
    work, folder, env, _ = indexed
    out = textimg("search", "a red circle", "-k", "3", "--grid", "noext", cwd=work, env_extra=env)
    assert out.returncode == 0 and "grid written to noext.png" in out.stderr
    assert (work / "noext.png").stat().st_size > 1000
    bad = textimg("search", "a red circle", "--grid", "grid.txt", cwd=work, env_extra=env)
    assert bad.returncode == 1 and bad.stdout == "" and "--grid grid.txt: .txt is not a picture format" in bad.stderr


def test_a_reader_that_stops_early_is_not_an_error(indexed):
    """`textimg search ... | head -1`: the pipe closes before the results are written."""
    work, folder, env, _ = indexed
    proc = subprocess.Popen([sys.executable, "-m", "textimg_helpers", "search", "a red circle", "-k", "50", "-q"],
                            cwd=work, env={**os.environ, "TEXTIMG_PROFILE": "shapes", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(120) == 141 and "error" not in err.lower() and "Traceback" not in err, err
