"""The CLI contract, end to end in real processes (what a terminal sees), on generated images and Milvus Lite."""

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import SHAPES_COLLECTION, run_textimg, shapes_folder, textimg_command


def snapshot(text, folder):
    return re.sub(r"\d\.\d{3}", "S", text.replace(str(folder), "<DIR>"))


def test_index_prints_the_summary_line_last(tmp_path, shapes_encoder):
    images = shapes_folder(tmp_path / "images")
    first = run_textimg("index", images, "--uri", tmp_path / "milvus.db", "--batch-size", 16, "-q")
    assert first.code == 0, first.err
    assert first.out.strip().splitlines()[-1] == "indexed=40 skipped=0 unchanged=0 total=40"


def test_unchanged_rerun_indexes_nothing_and_loads_no_model(indexed, tmp_path):
    garbage = tmp_path / "shapes-clip.pt"  # same model name, but loading it would fail loudly
    garbage.write_bytes(b"not a checkpoint")
    again = run_textimg("index", indexed.images, "--uri", indexed.uri, "--model", garbage,
                        "--collection", SHAPES_COLLECTION, "-q")
    assert again.code == 0, again.err
    assert again.out.strip().splitlines()[-1] == "indexed=0 skipped=0 unchanged=120 total=120"


def test_search_prints_score_and_path_best_first(indexed):
    out = run_textimg("search", "a red circle", "-k", "3", "--uri", indexed.uri, "-q")
    assert out.code == 0, out.err
    lines = snapshot(out.out, indexed.images).splitlines()
    assert sorted(lines) == [f"S  <DIR>/red_circle_000{i}.png" for i in range(3)]
    scores = [float(line.split()[0]) for line in out.out.splitlines()]
    assert scores == sorted(scores, reverse=True)


def test_search_json_is_only_a_json_list_best_first(indexed):
    out = run_textimg("search", "a blue square", "-k", "5", "--json", "--uri", indexed.uri, "-q")
    hits = json.loads(out.out)
    assert len(hits) == 5 and all({"filepath", "score"} <= set(h) for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert [Path(h["filepath"]).name.startswith("blue_square") for h in hits[:3]] == [True] * 3


def test_stats_line(indexed):
    out = run_textimg("stats", "--uri", indexed.uri, "-q")
    assert out.out.strip() == "rows=120 model=shapes-clip dim=128"


def test_errors_are_one_line_without_traceback(indexed):
    out = run_textimg("search", "a dog", "--collection", "nope", "--uri", indexed.uri, "-q")
    assert out.code == 1
    assert out.last_err.startswith("textimg: error: no collection named 'nope'")
    assert "Traceback" not in out.err


def test_demo_ends_with_ten_red_circles_and_a_grid(tmp_path):
    out = run_textimg("demo", "-q", cwd=tmp_path, env={"TEXTIMG_DATA_DIR": str(tmp_path / "data")})
    assert out.code == 0, out.err
    lines = out.out.strip().splitlines()
    assert lines[0] == "top 10 for 'a red circle':"
    names = [Path(line.split("  ", 1)[1]).name for line in lines[1:]]
    assert len(names) == 10 and all(n.startswith("red_circle_") for n in names), names
    assert (tmp_path / "outputs" / "demo_grid.png").stat().st_size > 10_000


def test_similar_returns_the_photo_itself_first_and_writes_a_grid(indexed, tmp_path):
    photo = indexed.images / "green_star_0001.png"
    out = run_textimg("similar", photo, "-k", "4", "--json", "--grid", "similar.png", "--uri", indexed.uri, "-q",
                      cwd=tmp_path)
    assert out.code == 0, out.err
    hits = json.loads(out.out)
    assert hits[0]["filepath"] == str(photo) and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert all(Path(h["filepath"]).name.startswith("green_star") for h in hits[:3])
    assert (tmp_path / "similar.png").stat().st_size > 5_000


def test_where_filter_reaches_milvus(indexed):
    out = run_textimg("search", "a red circle", "-k", "5", "--json", "--where", 'label == "blue_cross"',
                      "--uri", indexed.uri, "-q")
    assert out.code == 0, out.err
    assert {h["label"] for h in json.loads(out.out)} == {"blue_cross"}


def test_drop_asks_for_yes_then_deletes_only_that_collection(tmp_path):
    folder = shapes_folder(tmp_path / "images")
    uri = tmp_path / "drop.db"
    for collection in ("keep_me", "drop_me"):
        run = run_textimg("index", folder, "--uri", uri, "--collection", collection, "-q")
        assert run.code == 0, run.err

    refused = run_textimg("drop", "--uri", uri, "--collection", "drop_me", "-q")
    assert refused.code == 1
    assert refused.err.strip() == "textimg: error: dropping deletes every row of 'drop_me': add --yes to confirm"
    assert run_textimg("stats", "--uri", uri, "--collection", "drop_me", "-q").out.startswith("rows=40 ")

    dropped = run_textimg("drop", "--yes", "--uri", uri, "--collection", "drop_me", "-q")
    assert dropped.code == 0 and dropped.out.strip() == "dropped drop_me"
    gone = run_textimg("stats", "--uri", uri, "--collection", "drop_me", "-q")
    assert gone.code == 1 and "no collection named 'drop_me' (existing: keep_me)" in gone.err
    kept = run_textimg("stats", "--uri", uri, "--collection", "keep_me", "-q")
    assert kept.out.strip() == "rows=40 model=shapes-clip dim=128"


def test_json_stdout_stays_clean_when_milvus_refuses_a_filter(indexed):
    out = run_textimg("search", "a red circle", "--json", "--where", 'label = = "x', "--uri", indexed.uri, "-q")
    assert out.code == 1 and out.out == ""
    assert out.err.strip().startswith("textimg: error: Milvus refused the search with filter")
    assert len(out.err.strip().splitlines()) == 1, out.err  # Milvus Lite's own lines go to its log


def test_grid_names_what_it_wrote_and_refuses_an_unknown_format_before_searching(indexed, tmp_path):
    out = run_textimg("search", "a red circle", "-k", "3", "--grid", "noext", "--uri", indexed.uri, "-q",
                      cwd=tmp_path)
    assert out.code == 0 and "grid written to noext.png" in out.err
    assert (tmp_path / "noext.png").stat().st_size > 1000
    bad = run_textimg("search", "a red circle", "--grid", "grid.txt", "--uri", indexed.uri, "-q", cwd=tmp_path)
    assert bad.code == 1 and bad.out == "" and "--grid grid.txt: .txt is not a picture format" in bad.err


def test_a_reader_that_stops_early_is_not_an_error(indexed):
    """`textimg search ... | head -1`: the pipe closes before the results are written."""
    proc = subprocess.Popen(textimg_command("search", "a red circle", "-k", "50", "--uri", indexed.uri, "-q"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(120) == 128 + signal.SIGPIPE and "error" not in err.lower() and "Traceback" not in err, err
