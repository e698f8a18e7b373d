"""The page of ``textimg app``: search, "more like this", a folder to index, near-duplicates.

Voilà renders ``explore.ipynb`` (beside this module), whose one code cell is ``explore()``. The widgets and their
logic live here, so that a test can drive the page without a browser, as with ``widgets.SearchPanel``:
set ``app.folder.value``, press ``app.index_button.click()``, read ``app.info`` and ``app.index_status``.
``textimg app`` (``cli.cmd_app``) starts Voilà on 127.0.0.1 and hands its options to the page's kernel
as ``TEXTIMG_*`` variables (paths made absolute), and the folder it was started in as ``TEXTIMG_APP_DIR``:
a relative folder typed in the page is read against it, so it means what it means in the terminal.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import ipywidgets as widgets

from ..config import error_text, model_for_name
from ..duplicates import DEFAULT_THRESHOLD, find_duplicates, tier
from ..moves import move_extras
from ..hits import Hit
from ..search import describe_terms, parse_expression, search_words_and_image, words_of
from ..store import check_collection, collection_info, count_rows, has_words, search_by_words
from ..widgets import SearchPanel, close_widgets, status_html

__all__ = ["APP_NOTEBOOK", "ExploreApp", "START_DIR", "explore"]

APP_NOTEBOOK = Path(__file__).parent / "explore.ipynb"
START_DIR = "TEXTIMG_APP_DIR"  # set by ``textimg app``: the folder the command ran in, for relative folders
MAX_SKIPPED_SHOWN, MAX_GROUPS_SHOWN, MAX_GROUP_IMAGES_SHOWN = 20, 20, 12
MATCHES = [("words and pictures", "both"), ("words", "words"), ("pictures", "image")]  # search --match
MAX_WORDS_SHOWN = 80  # characters of a hit's words under its thumbnail (all of them on hover)


class AppPanel(SearchPanel):
    """The search panel with an "add to query" button under each result: it appends `` + <path>`` to
    the query box, to combine that image with words (``a circle + /photos/blue_square.png - a square``).
    In a collection indexed with the words of its pictures (``--ocr``), each result shows its words, and
    ``match`` chooses what a search compares, as ``textimg search --match``: the words read in the
    pictures (BM25), the pictures (CLIP), or both in one hybrid search."""

    def __init__(self, client, collection_name: str, encoder, **options):
        self.match = widgets.ToggleButtons(options=MATCHES, value="image", description="match")
        super().__init__(client, collection_name, encoder, **options)
        self.show_match()

    @property
    def widget(self) -> widgets.VBox:
        box = super().widget
        box.children = (box.children[0], self.match, *box.children[1:])
        return box

    def show_match(self) -> None:
        """Words and pictures by default when the collection has words; only pictures, else."""
        words = self.client.has_collection(self.collection_name) and has_words(self.client, self.collection_name)
        self.match.value = "both" if words else "image"
        self.match.disabled = not words

    def search(self) -> None:
        """Search as ``match`` says: the words (BM25), the pictures (CLIP) or both (hybrid search)."""
        try:
            terms = parse_expression(self.query.value)
        except Exception as exc:  # an empty query, a bad weight, an unreadable image
            self.show_status(str(exc) or type(exc).__name__, error=True)
            return
        words, match = words_of(terms), self.match.value
        if match == "image" or not words:
            return super().search()

        def find() -> list[Hit]:
            if match == "words":
                return search_by_words(self.client, self.collection_name, words, self.k.value, self.photo_filter())
            return search_words_and_image(self.client, self.collection_name, self.encoder, terms, self.k.value,
                                          self.photo_filter(), text_encoder=self.text_encoder)

        self._run(find, f"for {describe_terms(terms)} (match: {dict((v, k) for k, v in MATCHES)[match]})")

    def result_card(self, hit: Hit) -> widgets.VBox:
        card = super().result_card(hit)
        add = widgets.Button(description="add to query", layout=widgets.Layout(width=f"{self.thumb_size}px"),
                             tooltip=f"append + {hit.filepath} to the query")
        add.on_click(lambda _button: self.add_to_query(hit))
        card.children = (*card.children, add)
        if hit.text:  # the words read in the picture, under it (an <i>: the label's <span title> stays the only one)
            shown = hit.text if len(hit.text) <= MAX_WORDS_SHOWN else hit.text[:MAX_WORDS_SHOWN] + "..."
            card.children = (*card.children, widgets.HTML(
                f'<i class="textimg-words" title="{html.escape(hit.text)}">{html.escape(shown)}</i>',
                layout=widgets.Layout(width=f"{self.thumb_size}px")))
        return card

    def add_to_query(self, hit: Hit) -> None:
        """Append the image of ``hit`` to the query box as a term to add."""
        text = self.query.value.strip()
        self.query.value = f"{text} + {hit.filepath}" if text else hit.filepath


class ExploreApp:
    """The whole page: the collection's line, the search panel, indexing a folder, near-duplicates."""

    def __init__(self, session, top_k: int = 8, progress: bool = True, start_dir: str | os.PathLike | None = None):
        """``start_dir``: the folder relative folders typed in the page are read against (default: the
        current one)."""
        self.session, self.progress = session, progress
        self.start_dir = Path(start_dir or os.getcwd())
        text_encoder = session.load_text_encoder() if session.text_model != "clip" else None
        self.panel = AppPanel(session.connect(), session.collection_name, session.load_encoder(), top_k=top_k,
                              placeholder=session.query, text_encoder=text_encoder)
        self.panel.query.layout.width = "640px"  # room for a photo's path in a combined query
        self.info = widgets.HTML()
        self.collections = widgets.Dropdown(description="Collection", layout=widgets.Layout(width="520px"))
        self.fill_collections()
        self.collections.observe(lambda change: self.switch(change["new"]), names="value")
        self.folder = widgets.Text(placeholder="a folder of images (left empty: the demo images)",
                                   description="Folder", layout=widgets.Layout(width="420px"))
        self.index_button = widgets.Button(description="Index", icon="plus")
        self.read_words = widgets.Checkbox(value=False, description="read the words in the pictures (OCR)",
                                           indent=False, layout=widgets.Layout(width="300px"))
        self.index_progress = widgets.Output()  # tqdm's notebook progress bar lands here
        self.index_status = widgets.HTML()
        self.threshold = widgets.BoundedFloatText(value=DEFAULT_THRESHOLD, min=0.5, max=1.0, step=0.01,
                                                  description="threshold", layout=widgets.Layout(width="180px"))
        self.duplicates_button = widgets.Button(description="Find near-duplicates", icon="clone",
                                                layout=widgets.Layout(width="200px"))
        self.duplicates_status = widgets.HTML()
        self.extras_folder = widgets.Text(placeholder="a folder for the extras, e.g. ~/duplicates",
                                          description="Move to", layout=widgets.Layout(width="420px"))
        self.groups = widgets.VBox()
        self.index_button.on_click(lambda _button: self.index())
        self.duplicates_button.on_click(lambda _button: self.show_duplicates())
        self.show_info()

    @property
    def widget(self) -> widgets.VBox:
        """The page, to display in the notebook's cell."""
        heading = lambda text: widgets.HTML(f"<h3>{text}</h3>")  # noqa: E731
        return widgets.VBox([
            self.info, self.collections, self.panel.widget,
            heading("Add images"), widgets.HBox([self.folder, self.index_button, self.read_words]), self.index_progress,
            self.index_status,
            heading("Near-duplicates"), widgets.HBox([self.threshold, self.duplicates_button]),
            self.extras_folder, self.duplicates_status, self.groups])

    def show_info(self) -> None:
        """The top line: the collection, its row count and model, where Milvus is (or in red what is wrong)."""
        session, client, name = self.session, self.session.connect(), self.session.collection_name
        try:
            if not client.has_collection(name):
                text = f"{name}: no images yet; index a folder below (press Index with no folder for the demo images)"
            else:
                check_collection(client, name, session.model_name)
                info = collection_info(client, name)
                text = (f"{name}: {count_rows(client, name)} images, model {info['model']} (dim {info['dim']}), "
                        f"Milvus {session.settings.uri}")
        except Exception as exc:  # the page shows errors as one red line, never a traceback
            self.info.value = status_html(error_text(exc), error=True)
            return
        self.info.value = status_html(text)

    def fill_collections(self) -> None:
        """The file's collections, each with the model it was built with, the session's one chosen."""
        client, name = self.session.connect(), self.session.collection_name
        try:
            names = sorted(set(client.list_collections()) | {name})
            options = [(f"{n} ({collection_info(client, n)['model']})" if client.has_collection(n)
                        else f"{n} (new)", n) for n in names]
        except Exception:  # Milvus out of reach: the top line says it in red
            options = [(name, name)]
        self.collections.options, self.collections.value = options, name

    def switch(self, collection: str) -> None:
        """Search and index ``collection`` with the model it was built with (loaded now, once)."""
        from ..session import Session

        if collection == self.session.collection_name:
            return
        try:
            stored = collection_info(self.session.connect(), collection)["model"]
            model, random_weights = model_for_name(stored)
            settings = self.session.settings.with_(model=model, collection_name=collection)
            session = Session.from_settings(settings, random_weights, announce=lambda *_: None)
            session._client = self.session.connect()  # the same file, the same connection
            encoder = session.load_encoder()
        except Exception as exc:
            self.info.value = status_html(error_text(exc), error=True)
            return
        self.session, self.panel.collection_name, self.panel.encoder = session, collection, encoder
        if session.text_model == "clip":
            self.panel.text_encoder = encoder
        self.panel.list_cameras()
        self.panel.show_match()
        self.show_info()

    def index(self) -> None:
        """Index the folder box's folder (empty: the profile's demo images) incrementally, with a
        progress bar; then the summary, each skipped file with its reason, and the new row count."""
        folder = self.folder.value.strip()
        self.index_button.disabled = True
        self.index_progress.clear_output()
        self.index_status.value = status_html(f"indexing {folder or 'the demo images'} ...")
        with self.index_progress:  # an Output swallows an exception raised in it: catch it here
            try:
                report = self.session.index(self.path(folder) if folder else None, progress=self.progress,
                                            verbose=False, ocr=self.read_words.value)
                failure = None
            except Exception as exc:
                report, failure = None, exc
        self.index_button.disabled = False
        if failure is not None:
            self.index_status.value = status_html(error_text(failure), error=True)
        else:
            self.index_status.value = report_html(report)
            self.panel.list_cameras()
            self.panel.show_match()
        self.show_info()

    def show_duplicates(self) -> None:
        """Groups of near-duplicates at the threshold box's cosine, one row of thumbnails per group."""
        threshold = self.threshold.value
        try:
            groups, n_rows = find_duplicates(self.session.connect(), self.session.collection_name, threshold)
        except Exception as exc:
            self.duplicates_status.value = status_html(error_text(exc), error=True)
            return
        shown = groups[:MAX_GROUPS_SHOWN]
        old = self.groups.children
        self.groups.children = [self.group_row(number, group) for number, group in enumerate(shown, 1)]
        for row in old:
            close_widgets(row)
        text = (f"groups={len(groups)} images={sum(map(len, groups))} rows={n_rows} threshold={threshold:g}"
                + (f" (the first {len(shown)} groups shown)" if len(shown) < len(groups) else ""))
        self.duplicates_status.value = status_html(text)

    def group_row(self, number: int, group: list[Hit]) -> widgets.VBox:
        """``group N: M images, <tier>`` over a row of the group's cards (score: cosine to the first
        image), and a button that keeps one image and moves the others to the "Move to" folder."""
        cards = [self.panel.result_card(hit) for hit in group[:MAX_GROUP_IMAGES_SHOWN]]
        more = f" (the first {len(cards)} shown)" if len(cards) < len(group) else ""
        title = widgets.HTML(f"<b>group {number}: {len(group)} images, {tier(group)}</b>{more}")
        move = widgets.Button(description="keep one, move the others", icon="archive",
                              layout=widgets.Layout(width="240px"))
        done = widgets.HTML()
        move.on_click(lambda _button: self.move_group(group, move, done))
        return widgets.VBox([title, widgets.HBox(cards, layout=widgets.Layout(overflow_x="auto", grid_gap="8px")),
                             widgets.HBox([move, done])])

    def move_group(self, group: list[Hit], button: widgets.Button, done: widgets.HTML) -> None:
        """``textimg duplicates --move-extras-to`` for one group: nothing is deleted, the list undoes it."""
        folder = self.extras_folder.value.strip()
        if not folder:
            done.value = status_html("type a folder for the extras in the Move to box first", error=True)
            return
        said: list[str] = []
        try:
            moved, _kept, listing = move_extras(self.session.connect(), self.session.collection_name, [group],
                                                self.path(folder), say=said.append)
        except Exception as exc:
            done.value = status_html(error_text(exc), error=True)
            return
        button.disabled = True
        left = [line for line in said if line.startswith("not moved")]  # checked just before each move
        done.value = status_html("; ".join([f"moved {moved} to {listing.parent} (undo: textimg duplicates --undo "
                                            f"{listing})", *left]), error=bool(left))
        self.show_info()

    def path(self, typed: str) -> Path:
        """A folder typed in the page: ``~`` expanded, a relative one read against ``start_dir``."""
        return self.start_dir / Path(typed).expanduser()


def report_html(report) -> str:
    """An indexing report as the CLI prints it: the skipped files with their reasons, then the summary."""
    lines = [f"skipped {path}: {reason}" for path, reason in report.skipped[:MAX_SKIPPED_SHOWN]]
    if len(report.skipped) > MAX_SKIPPED_SHOWN:
        lines.append(f"... and {len(report.skipped) - MAX_SKIPPED_SHOWN} more skipped files")
    if report.removed:
        lines.append(f"removed {report.removed} rows of files no longer in the folder or no longer readable")
    return "<br>".join([f"<b>{html.escape(report.summary())}</b>"] + [html.escape(line) for line in lines])


def explore(top_k: int = 8) -> widgets.Widget:
    """The page's one cell: a session from the ``TEXTIMG_*`` settings, then the app (or one red line).
    A relative Milvus Lite file is opened in ``TEXTIMG_APP_DIR``, the folder ``textimg app`` ran in."""
    from ..milvus import connect, is_lite
    from ..session import Session

    start_dir = os.environ.get(START_DIR) or None
    try:
        session = Session.from_settings()
        settings = session.settings
        if start_dir and is_lite(settings.uri):  # the page still shows the file as it was given
            lite_file = Path(start_dir) / Path(settings.uri).expanduser()
            session._client = connect(str(lite_file), settings.milvus_token, settings.service_idle)
        session.load_encoder()
        return ExploreApp(session, top_k, start_dir=start_dir).widget
    except Exception as exc:  # a bad setting, a model that does not load, Milvus out of reach
        return widgets.HTML(status_html(error_text(exc), error=True))
