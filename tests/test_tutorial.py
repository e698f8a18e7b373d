"""The tutorial reads as lessons: 00 reaches its grid within 40 lines of the Milvus tutorial's own calls,
01-05 each end with a recap and exercises whose solutions are collapsed, markdown cells stay short,
glossary terms are linked where they first appear, and no verification plumbing is left in a lesson.

nbval runs every cell, solutions included; these checks read the notebooks as a learner sees them.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
LESSONS = [path for path in NOTEBOOKS if not path.name.startswith("00")]
GLOSSARY = ROOT / "docs" / "glossary.md"
MAX_LINES_TO_GRID = 40
MAX_WORDS = 150
# the Milvus tutorial's calls, each on the way from the top of 00 to its grid
TUTORIAL_CALLS = {"clip.load": r"\bclip\.load\(", "preprocess": r"\bpreprocess\(", "encode_image": r"\.encode_image\(",
                  "clip.tokenize": r"\bclip\.tokenize\(", "encode_text": r"\.encode_text\(",
                  "MilvusClient(uri=...)": r"\bMilvusClient\(uri=", "create_collection": r"\.create_collection\(",
                  "insert or upsert": r"\.(insert|upsert)\(", "search": r"\.search\("}
# what verification plumbing looks like: it belongs in tests/, not in a lesson
PLUMBING = {"a scratch collection": r"_one_batch|_check\"", "driving a widget from code": r"\.click\(\)",
            "a tolerance": r"\batol\b|allclose", "timing the precision": r"\.bf16\b",
            "deleting rows so a run re-encodes": r"client\.delete\(", "a test's wording": r"the way its test"}
MAX_ASSERTS = 2  # per notebook: an assert stays only where it teaches (the labels of a known query, a count)
# glossary term -> how a notebook's markdown mentions it
TERMS = {"CLIP": r"\bCLIP\b", "ViT-B/32": r"ViT-B/32", "embedding": r"\bembeddings?\b", "token": r"\btokens?\b",
         "cosine similarity": r"\bcosine similarity\b", "Milvus": r"\bMilvus\b(?! Lite)", "Milvus Lite": r"\bMilvus Lite\b",
         "collection": r"\bcollections?\b", "schema": r"\bschema\b", "IVF_FLAT": r"\bIVF_FLAT\b",
         "nlist and nprobe": r"\bnlist\b", "consistency level": r"\b[Cc]onsistency\b", "upsert": r"\b[Uu]psert\b",
         "contrastive learning": r"\bcontrastive\b", "zero-shot": r"\bzero-shot\b", "recall@k": r"\brecall@",
         "mAP": r"\bmAP\b", "prompt ensembling": r"\bensembling\b", "top-k": r"\btop-k\b", "filter": r"\b[Ff]ilters?\b",
         "OCR": r"\bOCR\b", "BM25": r"\bBM25\b", "hybrid search": r"\b[Hh]ybrid search\b",
         "reciprocal-rank fusion": r"\breciprocal-rank fusion\b"}
REQUIRED_TERMS = ["CLIP", "contrastive learning", "embedding", "cosine similarity", "token", "ViT-B/32", "Milvus",
                  "collection", "index", "IVF_FLAT", "nlist and nprobe", "consistency level", "upsert", "recall@k",
                  "mAP", "zero-shot"]


def cells(path: Path) -> list[nbformat.NotebookNode]:
    return nbformat.read(path, as_version=4).cells


def is_colab_cell(cell) -> bool:
    return cell.cell_type == "code" and "google.colab" in cell.source


def code_lines(source: str) -> list[str]:
    return [line for line in source.splitlines() if line.strip()]


def slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def glossary_anchors() -> dict[str, str]:
    """``{heading: anchor}`` of the glossary's ``##`` headings."""
    headings = re.findall(r"^## (.+)$", GLOSSARY.read_text(encoding="utf-8"), flags=re.M)
    return {heading: slug(heading) for heading in headings}


def words(markdown: str) -> int:
    """The words a reader reads: link targets, images and HTML left out."""
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", markdown)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return len(re.sub(r"<[^>]+>", "", text).split())


# --- 00: the whole path first -----------------------------------------------------------------------

def path_to_first_grid() -> tuple[list, int]:
    """00's code cells from the top to the one that shows the grid (its last line is ``grid``)."""
    code = [cell for cell in cells(NOTEBOOKS[0]) if cell.cell_type == "code" and not is_colab_cell(cell)]
    end = next(i for i, cell in enumerate(code) if code_lines(cell.source)[-1].strip() == "grid")
    return code[: end + 1], end


def test_00_reaches_a_five_by_two_grid_within_40_lines_of_code():
    path, _ = path_to_first_grid()
    lines = sum(len(code_lines(cell.source)) for cell in path)
    assert lines <= MAX_LINES_TO_GRID, f"{lines} lines of code from the top of 00 to its grid"
    grid = path[-1].source
    assert re.search(r"Image\.new\(\"RGB\", \(5 \* (\d+), 2 \* \1\)", grid), grid  # 5 across, 2 down
    assert "limit=10" in "\n".join(cell.source for cell in path)


def test_00_uses_the_tutorials_own_calls_on_the_way_to_the_grid():
    path, _ = path_to_first_grid()
    source = "\n".join(cell.source for cell in path)
    missing = [name for name, pattern in TUTORIAL_CALLS.items() if not re.search(pattern, source)]
    assert not missing, f"not on the way to 00's grid: {missing}"
    assert re.search(r"MilvusClient\(uri=shared_uri\(", source), "the client must use the file's shared address"
    assert "textimg_helpers.session import" in source and "connect(" not in source  # no helper hides the calls


def test_00_says_why_the_plain_file_name_is_not_used():
    text = "\n".join(cell.source for cell in cells(NOTEBOOKS[0]) if cell.cell_type == "markdown")
    assert "only one program at a time" in text and "shared_uri" in text


def test_00_ends_with_the_path_then_a_recap():
    nb = cells(NOTEBOOKS[0])
    code = [i for i, cell in enumerate(nb) if cell.cell_type == "code"]
    after = nb[code[-1] + 1:]
    assert code_lines(nb[code[-1]].source)[-1].strip() == "grid", "00's last code cell is the grid"
    assert [cell.cell_type for cell in after] == ["markdown"] and "## Recap" in after[0].source


def test_00_shows_the_pipeline_as_a_picture_that_travels_with_the_notebook():
    cell = next(cell for cell in cells(NOTEBOOKS[0]) if "attachment:pipeline.png" in cell.source)
    png = cell.get("attachments", {}).get("pipeline.png", {}).get("image/png", "")
    assert png.startswith("iVBORw0KGgo"), "the pipeline picture is not attached (python scripts/draw_figures.py)"


# --- every notebook: a lesson ------------------------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_says_what_it_teaches_and_how_long_it_takes(path):
    first = cells(path)[0].source
    assert re.search(r"\*\*Time:\*\* runs in about \d+ s\b", first), first
    assert "teach" in first.lower() or "builds" in first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_ends_with_a_recap_and_what_comes_next(path):
    last = cells(path)[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Recap"), last.source[:80]
    assert "**Next:**" in last.source
    assert "service" not in last.source.lower()  # what was learned, not how the Milvus service behaves


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_each_lesson_has_two_exercises_with_collapsed_solutions(path):
    nb = cells(path)
    exercises = [i for i, cell in enumerate(nb) if cell.cell_type == "markdown"
                 and re.match(r"#+ Exercise\b", cell.source)]
    assert len(exercises) >= 2, f"{len(exercises)} exercises"
    for i in exercises:
        solution = nb[i + 1]
        assert solution.cell_type == "code" and solution.metadata.get("jupyter", {}).get("source_hidden") is True, \
            f"the cell after {nb[i].source.splitlines()[0]!r} must be its collapsed solution"
        assert code_lines(solution.source)[0] == "# Solution" and len(code_lines(solution.source)) > 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_cells_are_short(path):
    long = {i: words(cell.source) for i, cell in enumerate(cells(path))
            if cell.cell_type == "markdown" and words(cell.source) > MAX_WORDS}
    assert not long, f"markdown cells over {MAX_WORDS} words: {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lessons_hold_no_verification_plumbing(path):
    code = "\n".join(cell.source for cell in cells(path) if cell.cell_type == "code")
    text = "\n".join(cell.source for cell in cells(path))
    found = [what for what, pattern in PLUMBING.items() if re.search(pattern, text)]
    assert not found, f"{path.name} holds {found}: move it to tests/"
    asserts = len(re.findall(r"^\s*assert\b", code, flags=re.M))
    assert asserts <= MAX_ASSERTS, f"{asserts} asserts in {path.name}"


def test_the_notebooks_shapes_and_clip_text_agrees_with_the_code():
    """No Colab cell sets a profile that auto already picks; 04 sends German to real CLIP only through the
    multilingual text encoder."""
    for path in NOTEBOOKS:
        for cell in cells(path):
            assert "%env TEXTIMG_PROFILE" not in cell.source, f"{path.name}: auto already picks clip on Colab"
    viz = "\n".join(cell.source for cell in cells(ROOT / "notebooks" / "04_visualization.ipynb"))
    german_cell = next(c for c in viz.split("\n\n") if "german_panel = SearchPanel" in c)
    assert 'load_text_encoder("multilingual"' in german_cell  # real CLIP reads German only through it


# --- the glossary ------------------------------------------------------------------------------------

def test_the_glossary_defines_every_term_the_tutorial_needs():
    anchors = {heading.lower() for heading in glossary_anchors()}
    missing = [term for term in REQUIRED_TERMS if term.lower() not in anchors]
    assert not missing, f"not in {GLOSSARY.name}: {missing}"


def test_each_glossary_term_is_linked_where_it_first_appears():
    anchors = {heading.lower(): anchor for heading, anchor in glossary_anchors().items()}
    markdown = [(path.name, cell.source) for path in NOTEBOOKS for cell in cells(path) if cell.cell_type == "markdown"]
    for term, pattern in TERMS.items():
        anchor = anchors[term.lower()]
        first = next(((name, text) for name, text in markdown
                      if re.search(pattern, re.sub(r"\[[^\]]*\]\([^)]*\)|`[^`]*`", "", text))
                      or f"glossary.md#{anchor})" in text), None)
        assert first, f"{term!r} never appears in the notebooks' markdown"
        name, text = first
        assert f"../docs/glossary.md#{anchor})" in text, f"{term!r} first appears in {name} without its glossary link"


def test_every_glossary_link_in_the_notebooks_points_to_a_heading():
    anchors = set(glossary_anchors().values())
    for path in NOTEBOOKS:
        for cell in cells(path):
            for anchor in re.findall(r"glossary\.md#([\w-]+)\)", cell.source):
                assert anchor in anchors, f"{path.name}: no glossary heading for #{anchor}"


# --- the README: one screen, the reference in docs/ --------------------------------------------------

README = ROOT / "README.md"
PROSE = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md", ROOT / "data" / "README.md"]
# how a development log reads (the project speaks about its code and its measured figures only)
DIARY = r"\bthis session\b|\bearlier sessions?\b|\bmachines of (this|our)\b|\.\./shared/|\bwe tried\b|\bI (tried|measured)\b"


def test_the_readme_is_one_screen_with_a_picture_and_the_routes_in():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) <= 12_000, f"README.md is {len(text.encode())} bytes"
    first_screen = "\n".join(text.splitlines()[:40])
    assert re.search(r"!\[[^\]]+\]\(docs/[\w-]+\.png\)", first_screen), "no result picture on the first screen"
    for route in ("colab-badge.svg", "pip install -e .", "make demo", "make test"):
        assert route in first_screen, f"{route!r} is not on the README's first screen"
    assert all(f"notebooks/{path.name}" in text for path in NOTEBOOKS), "the notebook map misses a notebook"
    picture = re.search(r"\]\((docs/[\w-]+\.png)\)", text).group(1)
    assert (ROOT / picture).stat().st_size < 50_000, "the README's picture should be a small PNG"


@pytest.mark.parametrize("path", PROSE, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file, _, anchor = target.partition("#")
        assert (path.parent / file).exists(), f"{path.name}: link to a missing {target}"
        if anchor and file.endswith(".md"):
            headings = re.findall(r"^#+ (.+)$", (path.parent / file).read_text(encoding="utf-8"), flags=re.M)
            assert anchor in {slug(h) for h in headings}, f"{path.name}: no heading for {target}"


def test_no_development_log_in_the_prose_or_the_notebooks():
    texts = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in PROSE}
    texts |= {p.name: "\n".join(c.source for c in cells(p)) for p in NOTEBOOKS}
    found = {name: m.group(0) for name, text in texts.items() if (m := re.search(DIARY, text, flags=re.I))}
    assert not found, found
