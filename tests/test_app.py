"""``textimg app``: its command line, the page driven without a browser, then the real thing: the
command started as a user starts it, over an indexed shapes folder, and the page used in Chromium
(search, "more like this", a text combined with a photo, indexing a folder, near-duplicates).
Screenshots go to outputs/app_*.png.
"""

from __future__ import annotations

import contextlib
import html
import importlib.util
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from PIL import Image

from conftest import run_cli, shapes_folder, textimg_command, wait_for
from test_browser import CHROMIUM, SCREENSHOTS, page, sync_playwright  # noqa: F401 (page: a fixture)
from textimg_helpers.web.app import ExploreApp, explore
from textimg_helpers.config import Settings
from textimg_helpers.session import Session
from textimg_helpers.shapes import generate_shapes

COLLECTION = "app"
HAS_VOILA = importlib.util.find_spec("voila") is not None


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three shapes of each of the 40 classes and a byte copy of one of them: 121 images."""
    folder = shapes_folder(tmp_path_factory.mktemp("app") / "photos", per_class=3)
    shutil.copy(folder / "red_circle_0001.png", folder / "red_circle_copy.png")
    return folder


def index_photos(folder: Path, uri: str) -> None:
    """``textimg index`` of the photos into the ``app`` collection of ``uri``."""
    run = run_cli("index", folder, "--uri", uri, "--collection", COLLECTION, "-q")
    assert run.code == 0 and run.summary["total"] == 121, run.err


@pytest.fixture(scope="module")
def indexed(photos) -> str:
    """A Milvus Lite file with the photos indexed (the tests below only read it)."""
    uri = str(photos.parent / "milvus.db")
    index_photos(photos, uri)
    return uri


def new_folder(path: Path) -> Path:
    """40 more shapes (another seed: none is a copy of the indexed ones) and an empty ``broken.png``."""
    generate_shapes(path, per_class=1, size=64, seed=7)
    (path / "broken.png").write_bytes(b"")
    return path


def text_of(widget) -> str:
    """An HTML widget's text as a person reads it."""
    return html.unescape(re.sub(r"<br>", "\n", re.sub(r"<(?!br>)[^>]+>", "", widget.value)))


# --- the command line, without starting anything -----------------------------------------------------

def test_without_voila_it_says_what_to_install(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "voila", None)  # as if it were not installed
    run = cli("app", "--port", "0")
    assert run.code == 1 and not run.out
    assert run.last_err == ('textimg: error: textimg app needs Voila, which is not installed: '
                            'pip install "textimg-helpers[app]"')


@pytest.mark.skipif(not HAS_VOILA, reason="voila is not installed (pip install 'textimg-helpers[app]')")
def test_a_port_in_use_is_refused_in_one_line(cli, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = cli("app", "--port", port, "--uri", tmp_path / "milvus.db")
    assert run.code == 1 and not run.out
    assert run.last_err == (f"textimg: error: port {port} is in use on 127.0.0.1 (another textimg app, Voila or "
                            "Jupyter?): pick another with --port N, or --port 0 for any free port")
    assert not (tmp_path / "milvus.db").exists()  # nothing was started


def test_a_bad_port_is_a_usage_error(cli):
    run = cli("app", "--port", "70000")
    assert run.code == 2 and "--port must be between 0 and 65535, not 70000" in run.last_err


# --- the page's widgets, driven from Python ----------------------------------------------------------

@pytest.fixture
def open_app(shapes_encoder):
    """``open_app(uri, collection)``: the page's app over that collection; its clients closed after."""
    sessions = []

    def open_app(uri: str, collection: str = COLLECTION, start_dir=None) -> ExploreApp:
        settings = Settings(profile="shapes", milvus_uri=uri, collection_name=collection,
                            data_dir=Path(uri).parent / "data")
        sessions.append(Session.from_settings(settings))
        sessions[-1]._encoder = shapes_encoder  # loaded once for the whole run
        return ExploreApp(sessions[-1], top_k=5, progress=False, start_dir=start_dir)

    yield open_app
    for session in sessions:
        session.connect().close()  # else stopping the Milvus service waits for it


@pytest.fixture
def app(open_app, indexed) -> ExploreApp:
    return open_app(indexed)


def test_the_page_shows_rows_and_model_then_indexes_a_folder_with_reasons(open_app, photos, tmp_path):
    app = open_app(str(tmp_path / "milvus.db"))
    assert text_of(app.info) == ("app: no images yet; index a folder below (press Index with no folder for "
                                 "the demo images)")
    app.folder.value = str(photos)
    app.index_button.click()
    assert text_of(app.index_status) == "indexed=121 skipped=0 unchanged=0 total=121"
    assert text_of(app.info) == f"app: 121 images, model shapes-clip (dim 128), Milvus {tmp_path / 'milvus.db'}"
    folder = new_folder(tmp_path / "more")
    app.folder.value = str(folder)
    app.index_button.click()
    lines = text_of(app.index_status).splitlines()
    assert lines == ["indexed=40 skipped=1 unchanged=0 total=161",
                     f"skipped {folder / 'broken.png'}: UnreadableImage: empty file (0 bytes)"]
    assert text_of(app.info).startswith("app: 161 images, model shapes-clip")
    app.index_button.click()  # incremental: nothing new
    assert text_of(app.index_status).splitlines()[0] == "indexed=0 skipped=1 unchanged=40 total=161"


def test_the_page_switches_between_the_collections_of_its_file_and_their_models(open_app, photos, tmp_path):
    uri = str(tmp_path / "milvus.db")
    index_photos(photos, uri)
    random = run_cli("index", photos, "--uri", uri, "--collection", "app_random", "--random-weights", "-q")
    assert random.code == 0, random.err
    app = open_app(uri)
    assert dict(app.collections.options) == {"app (shapes-clip)": "app", "app_random (shapes-clip+random)": "app_random"}
    app.collections.value = "app_random"
    assert text_of(app.info).startswith("app_random: 121 images, model shapes-clip+random (dim 128)"), text_of(app.info)
    assert app.session.random_weights and app.panel.collection_name == "app_random"
    app.panel.query.value = "a red circle"
    app.panel.submit.click()
    assert len(app.panel.hits) == 5 and "error" not in app.panel.status.value
    app.collections.value = "app"
    assert text_of(app.info).startswith("app: 121 images, model shapes-clip (dim 128)")
    app.panel.submit.click()
    assert all(hit.label.startswith("red_circle") for hit in app.panel.hits[:3]), app.panel.hits


def test_index_with_no_folder_indexes_the_demo_images(open_app, tmp_path):
    app = open_app(str(tmp_path / "milvus.db"))  # a fresh clone: nothing indexed yet
    app.index_button.click()
    assert text_of(app.index_status) == "indexed=480 skipped=0 unchanged=0 total=480"
    assert text_of(app.info).startswith("app: 480 images, model shapes-clip")
    assert (tmp_path / "data" / "shapes").is_dir()  # the profile's images, made under TEXTIMG_DATA_DIR


def test_a_bad_folder_is_one_red_line(app, tmp_path):
    app.folder.value = str(tmp_path / "nowhere")
    app.index_button.click()
    assert text_of(app.index_status) == f"folder not found: {tmp_path / 'nowhere'}"
    assert "color:#b00020" in app.index_status.value and not app.index_button.disabled


def test_a_relative_folder_means_the_folder_the_app_started_in(open_app, tmp_path):
    start = tmp_path / "start"
    new_folder(start / "more")
    cwd = os.getcwd()
    app = open_app(str(tmp_path / "milvus.db"), start_dir=start)
    app.folder.value = "more"  # typed in the page: relative to where textimg app ran, not to the kernel's folder
    app.index_button.click()
    assert text_of(app.index_status).splitlines()[0] == "indexed=40 skipped=1 unchanged=0 total=40"
    assert os.getcwd() == cwd  # nothing changed the process's folder


def test_the_page_kernel_gets_absolute_paths(monkeypatch, tmp_path):
    from textimg_helpers.web.app import START_DIR
    from textimg_helpers.web.server import page_env

    monkeypatch.chdir(tmp_path)
    session = Session.from_settings(Settings(profile="shapes", milvus_uri="milvus.db", data_dir=Path("data")))
    env = page_env(session)
    assert env["TEXTIMG_MILVUS_URI"] == "milvus.db" and env["TEXTIMG_DATA_DIR"] == str(tmp_path / "data")
    assert env[START_DIR] == str(tmp_path) and env["TEXTIMG_TEXT_MODEL"] == "clip"


def test_a_page_that_cannot_open_is_one_red_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTIMG_TEXT_MODEL", str(tmp_path / "no-such-model"))
    page_ = explore()
    assert text_of(page_) == (f"text model '{tmp_path / 'no-such-model'}' is neither clip nor multilingual nor a "
                              "folder holding a sentence-transformers model (TEXTIMG_TEXT_MODEL / --text-model)")
    assert "color:#b00020" in page_.value


def test_add_to_query_combines_a_text_with_that_photo(app):
    app.panel.query.value = "a blue square"
    app.panel.submit.click()
    photo = app.panel.hits[0]
    assert photo.label == "blue_square"
    app.panel.query.value = "a circle"
    app.panel.results.children[0].children[3].click()  # its "add to query" button
    assert app.panel.query.value == f"a circle + {photo.filepath}"
    app.panel.query.value += " - a square"
    app.panel.submit.click()
    assert [hit.label for hit in app.panel.hits[:3]] == ["blue_circle"] * 3


def test_the_page_takes_a_photo_of_ones_own_and_saves_nothing(app, tmp_path, monkeypatch):
    """The upload button of the page's panel: a photo the collection lacks finds its kind; the app's data
    folder and the folder it runs in get no file."""
    from datetime import datetime, timezone

    monkeypatch.chdir(tmp_path)
    photo = next(p for p in new_folder(tmp_path / "camera").iterdir() if p.name.startswith("green_star")).read_bytes()
    before = sorted(tmp_path.rglob("*")), sorted(app.session.settings.data_dir.rglob("*"))
    assert app.panel.upload in app.panel.widget.children[0].children  # beside the query box
    app.panel.upload.value = ({"name": "IMG_0001.png", "type": "image/png", "size": len(photo),
                               "content": memoryview(photo), "last_modified": datetime.now(timezone.utc)},)
    assert [hit.label for hit in app.panel.hits[:3]] == ["green_star"] * 3
    assert text_of(app.panel.status) == "top 5 like your photo IMG_0001.png"
    assert (sorted(tmp_path.rglob("*")), sorted(app.session.settings.data_dir.rglob("*"))) == before


def test_duplicates_show_the_planted_copy_as_one_row(app, photos):
    folder = photos
    app.threshold.value = 0.999
    app.duplicates_button.click()
    assert text_of(app.duplicates_status) == "groups=1 images=2 rows=121 threshold=0.999"
    (row,) = app.groups.children
    title, cards, actions = row.children
    assert text_of(title) == "group 1: 2 images, identical"
    paths = sorted(re.search(r'title="([^"]+)"', card.children[1].value)[1] for card in cards.children)
    assert paths == [str(folder / "red_circle_0001.png"), str(folder / "red_circle_copy.png")]
    move, done = actions.children
    move.click()
    assert text_of(done) == "type a folder for the extras in the Move to box first"


def groups_shown(open_app, photos, tmp_path):
    """The app over a copy of ``photos`` (in ``tmp_path/photos``), its groups at 0.999 shown and the Move to
    box filled: ``(app, folder, uri)``."""
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    uri = str(tmp_path / "milvus.db")
    index_photos(folder, uri)
    app = open_app(uri)
    app.threshold.value = 0.999
    app.duplicates_button.click()
    app.extras_folder.value = str(tmp_path / "extras")
    return app, folder, uri


def test_a_group_is_resolved_from_the_page_and_undone_from_the_terminal(open_app, photos, tmp_path, cli):
    app, folder, uri = groups_shown(open_app, photos, tmp_path)
    move, done = app.groups.children[0].children[2].children
    move.click()
    listing = tmp_path / "extras" / "textimg-moved.csv"
    assert text_of(done) == f"moved 1 to {tmp_path / 'extras'} (undo: textimg duplicates --undo {listing})"
    assert move.disabled and len(list(folder.iterdir())) == 120
    assert text_of(app.info).startswith("app: 121 images")  # moved, still in the collection
    undone = cli("duplicates", "--uri", uri, "--collection", COLLECTION, "--undo", listing)
    assert undone.code == 0 and undone.out.startswith("restored=1 ") and len(list(folder.iterdir())) == 121


def test_the_move_button_leaves_a_file_changed_since_the_groups_were_shown(open_app, photos, tmp_path):
    app, _folder, _uri = groups_shown(open_app, photos, tmp_path)
    paths = [Path(p) for p in re.findall(r'title="([^"]+)"', str([c.children[1].value for c in
                                                                 app.groups.children[0].children[1].children]))]
    for path in paths:  # both replaced by other pictures after the groups were shown
        Image.new("RGB", (48, 48), (10, 20, 30)).save(path, format="PNG")
    before = {p: p.read_bytes() for p in paths}
    move, done = app.groups.children[0].children[2].children
    move.click()
    assert text_of(done).startswith(f"moved 0 to {tmp_path / 'extras'} ")
    assert "is not safe: it changed since the duplicates were found" in text_of(done)
    assert {p: p.read_bytes() for p in paths} == before


# --- the real command, in Chromium --------------------------------------------------------------------

def browser_missing() -> str:
    """Why the browser test cannot run here, in one line ("" when it can)."""
    if sync_playwright is None:
        return "playwright is not installed (pip install playwright)"
    if not Path(CHROMIUM).exists():
        return "no Chromium at /usr/bin/chromium (apt-get install chromium)"
    return "" if HAS_VOILA else "voila is not installed (pip install 'textimg-helpers[app]')"


def read_lines(stream) -> queue.Queue:
    """The lines of ``stream``, read in a thread as they come."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


def start_app(tmp_path: Path, *options) -> tuple[subprocess.Popen, queue.Queue, queue.Queue, int]:
    """``textimg app --uri milvus.db --port N OPTIONS`` started as a user starts it, in ``tmp_path``."""
    from textimg_helpers.config import free_port

    port = free_port()
    env = {**os.environ, "TEXTIMG_PROFILE": "shapes", "TEXTIMG_DATA_DIR": str(tmp_path / "data")}
    # relative paths, typed in the terminal or in the page, mean the folder the command runs in
    app = subprocess.Popen(textimg_command("app", "--uri", "milvus.db", "--port", port, *options),
                           env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return app, read_lines(app.stdout), read_lines(app.stderr), port


def first_line(app: subprocess.Popen, out: queue.Queue, err: queue.Queue, port: int) -> str:
    """The page's address from the first line, ``serving http://127.0.0.1:PORT/?token=T (Ctrl-C to stop)``."""
    try:
        first = out.get(timeout=90)
    except queue.Empty:
        app.kill()
        raise AssertionError("textimg app said nothing in 90 s: " + "".join(err.queue)) from None
    found = re.fullmatch(rf"serving (http://127\.0\.0\.1:{port}/\?token=[0-9a-f]{{48}}) \(Ctrl-C to stop\)\n", first)
    assert found, first + "".join(err.queue)
    return found.group(1)


@pytest.fixture
def served(photos, tmp_path):
    """``textimg app --uri ... --collection app --port N`` as a user starts it, over the photos indexed
    by ``textimg index``; its URL (with its token) once it says so. Afterwards Ctrl-C must stop it, Voila
    and the page's kernel with it."""
    index_photos(photos, str(tmp_path / "milvus.db"))
    app, out, err, port = start_app(tmp_path, "--collection", COLLECTION)
    yield first_line(app, out, err, port), app
    processes = psutil.Process(app.pid).children(recursive=True)  # Voila and the page's kernel
    app.send_signal(signal.SIGINT)
    try:
        code = app.wait(timeout=60)
    finally:
        _, left = psutil.wait_procs(processes, timeout=5)
        for process in left:  # so that a failure here leaves nothing running
            process.kill()
    assert code == 0 and not left, f"exit {code}, still running after Ctrl-C: {left}"
    assert "".join(err.queue).strip().splitlines()[-1:] == ["textimg app: stopped"], "".join(err.queue)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the port still answers"


def fetch(url: str) -> tuple[int, str]:
    """``(status, Location)`` of one GET, redirects not followed."""
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=120) as reply:
            return reply.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location", "")


def page_kernels(app: subprocess.Popen) -> list[psutil.Process]:
    """The kernels Voila started for pages (``ipykernel_launcher`` processes under ``textimg app``)."""
    found = []
    for process in psutil.Process(app.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):  # one that exits meanwhile (a zombie until reaped)
            if process.status() != psutil.STATUS_ZOMBIE and any("ipykernel" in part for part in process.cmdline()):
                found.append(process)
    return found


@pytest.mark.skipif(not HAS_VOILA, reason="Voila is not installed (pip install -e '.[app]')")
def test_the_app_wants_its_token_culls_idle_kernels_and_dies_with_its_command(indexed, tmp_path):
    shutil.copy(indexed, tmp_path / "milvus.db")
    app, out, err, port = start_app(tmp_path, "--collection", COLLECTION, "--cull-idle", "4")
    try:
        url = first_line(app, out, err, port)
        status, where = fetch(url.split("?")[0])  # another user of the machine, without the token
        assert status in (302, 403) and "/login" in (where if status == 302 else "/login"), (status, where)
        assert not page_kernels(app)  # no page was rendered, so no kernel started
        for _ in range(3):  # three page loads with the token, each one a kernel
            assert fetch(url)[0] == 200
        assert len(page_kernels(app)) == 3
        wait_for(lambda: not page_kernels(app), timeout=60, what="the kernels of the closed pages to be culled")
        voila = psutil.Process(app.pid).children()
        app.send_signal(signal.SIGKILL)  # not Ctrl-C: nothing of textimg app runs to stop Voila
        app.wait(timeout=10)
        _, left = psutil.wait_procs(voila, timeout=20)
        assert not left, f"Voila still running after SIGKILL of textimg app: {left}"
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, "the port still answers"
    finally:
        for process in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if process.pid == app.pid or "voila" in " ".join(process.cmdline()):
                    process.kill()


def test_a_token_that_cannot_go_in_an_address_is_refused(cli):
    from textimg_helpers.web.server import check_token
    from textimg_helpers.config import TextimgError

    assert len(check_token(None)) == 48 and check_token(None) != check_token(None)
    assert check_token("my-class_2026") == "my-class_2026"
    with pytest.raises(TextimgError, match="--token takes letters, digits and - _ . ~"):
        check_token("a b&c")


def listening_addresses(pid: int) -> set[str]:
    """The addresses the process ``pid`` and its children listen on."""
    process = psutil.Process(pid)
    return {c.laddr.ip for p in [process] + process.children(recursive=True)
            for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def labels(page_) -> list[str]:
    """The label under each thumbnail of the results, in order."""
    return [text.split()[0] for text in page_.locator(".widget-gridbox span[title]").all_inner_texts()]


def status_line(page_, pattern: str):
    return page_.locator(".widget-html span").filter(has_text=re.compile(pattern))


@pytest.mark.skipif(bool(browser_missing()), reason=browser_missing())
def test_the_app_in_a_browser(served, page, photos, tmp_path):  # noqa: F811 (page: the fixture)
    from playwright.sync_api import expect

    url, app = served
    folder = photos
    assert listening_addresses(app.pid) == {"127.0.0.1"}  # loopback only
    SCREENSHOTS.mkdir(exist_ok=True)
    page.goto(url, timeout=120_000)
    query = page.locator("input[placeholder='a red circle']")
    expect(query).to_be_visible(timeout=120_000)
    expect(status_line(page, r"^app: 121 images, model shapes-clip \(dim 128\), Milvus milvus.db$")).to_be_visible()

    query.fill("a blue square")
    page.get_by_role("button", name="Search").click()
    expect(status_line(page, r"^top 8 for 'a blue square'$")).to_be_visible(timeout=60_000)
    assert labels(page)[:3] == ["blue_square"] * 3, labels(page)
    page.screenshot(path=SCREENSHOTS / "app_search.png")

    chosen = page.locator(".widget-gridbox span[title]").nth(2).get_attribute("title")  # the path, on hover
    assert chosen and Path(chosen).parent == folder, chosen
    page.get_by_role("button", name="more like this").nth(2).click()
    expect(status_line(page, rf"^top 8 like {re.escape(Path(chosen).name)}$")).to_be_visible(timeout=60_000)
    assert page.locator(".widget-gridbox span[title]").first.get_attribute("title") == chosen
    page.screenshot(path=SCREENSHOTS / "app_more_like_this.png")

    square = page.locator(".widget-gridbox span[title]").first.get_attribute("title")  # a blue square
    query.fill("a circle")
    page.get_by_role("button", name="add to query").first.click()
    expect(query).to_have_value(f"a circle + {square}")
    query.fill(f"a circle + {square} - a square")
    page.get_by_role("button", name="Search").click()
    expect(status_line(page, r"^top 8 for 'a circle' \+ '.+' - 'a square'$")).to_be_visible(timeout=60_000)
    assert labels(page)[:3] == ["blue_circle"] * 3, labels(page)
    page.screenshot(path=SCREENSHOTS / "app_combined.png")

    clicked = page.locator(".widget-gridbox span[title]").nth(4).get_attribute("title")
    page.locator(".widget-gridbox img").nth(4).click()  # a click on the picture itself: more like this
    expect(status_line(page, rf"^top 8 like {re.escape(Path(clicked).name)}$")).to_be_visible(timeout=60_000)
    assert page.locator(".widget-gridbox span[title]").first.get_attribute("title") == clicked

    more = new_folder(tmp_path / "more")
    page.locator("input[placeholder^='a folder of images']").fill("more")  # relative to where textimg app runs
    page.get_by_role("button", name="Index").click()
    expect(page.get_by_text("indexed=40 skipped=1 unchanged=0 total=161")).to_be_visible(timeout=120_000)
    expect(page.get_by_text(f"skipped {more / 'broken.png'}: UnreadableImage: empty file (0 bytes)")).to_be_visible()
    expect(status_line(page, r"^app: 161 images, model shapes-clip")).to_be_visible()
    progress = page.locator(".widget-output")  # tqdm's bar: the 40 images and the broken file, done
    expect(progress.locator(".widget-hprogress .progress-bar")).to_be_visible()
    expect(progress).to_contain_text(re.compile(r"indexing:\s*100%\s*41/41"))
    page.get_by_role("button", name="Index").scroll_into_view_if_needed()
    page.screenshot(path=SCREENSHOTS / "app_index.png")

    page.locator(".widget-text", has_text="threshold").locator("input").fill("0.999")
    page.get_by_role("button", name="Find near-duplicates").click()
    expect(page.get_by_text("groups=1 images=2 rows=161 threshold=0.999")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("group 1: 2 images")).to_be_visible()
    group = page.locator(".widget-vbox").filter(has_text=re.compile(r"^group 1: 2 images")).last
    titles = sorted(group.locator("span[title]").evaluate_all("spans => spans.map(s => s.title)"))
    assert titles == [str(folder / "red_circle_0001.png"), str(folder / "red_circle_copy.png")], titles
    group.scroll_into_view_if_needed()
    page.screenshot(path=SCREENSHOTS / "app_duplicates.png")

    page.locator("input[placeholder^='a folder of images']").fill(str(tmp_path / "nowhere"))
    page.get_by_role("button", name="Index").click()
    expect(page.locator("span[style*='#b00020']")).to_have_text(f"folder not found: {tmp_path / 'nowhere'}",
                                                                timeout=60_000)
    page.screenshot(path=SCREENSHOTS / "app_error.png")
    assert not page.locator(".jupyter-widgets-error-widget").count()  # every widget rendered
