"""A live search panel (ipywidgets): a query box, a k slider, thumbnails, "more like this".

The query box also takes combined queries, ``a red circle - red + blue`` or ``a circle + photo.png``:
terms joined by `` + `` or `` - `` (see ``search.parse_expression``).

The logic lives here so that a test can drive the panel without a browser: set ``panel.query.value``,
press ``panel.submit.click()``, and read ``panel.hits``, ``panel.results`` and ``panel.status``.
"""

from __future__ import annotations

import html
import io
import warnings
from pathlib import Path
from typing import Callable

import ipywidgets as widgets

try:  # clicks on a thumbnail (the buttons do the same where it is missing)
    from ipyevents import Event
except ImportError:  # pragma: no cover
    Event = None

from .search import describe_terms, parse_expression, search_by_terms
from .filters import collection_filter
from .hits import Hit
from .search import search_by_image, search_by_photo_bytes
from .store import camera_names, check_collection
from .viz import thumbnail

__all__ = ["SearchPanel", "THUMB_SIZE", "close_widgets", "status_html", "uploaded_files"]

THUMB_SIZE = 120
ERROR_COLOUR = "#b00020"


class SearchPanel:
    """Type a query, pick k, press Search; each result has a "more like this" button.

    ``text_encoder`` (e.g. ``load_text_encoder("multilingual")``) encodes the typed queries instead of
    ``encoder``, whose image encoder still serves "more like this"."""

    def __init__(self, client, collection_name: str, encoder, top_k: int = 5, max_k: int = 20,
                 thumb_size: int = THUMB_SIZE, placeholder: str = "a red circle", text_encoder=None):
        self.client, self.collection_name, self.encoder = client, collection_name, encoder
        self.text_encoder = text_encoder or encoder
        if text_encoder is not None and getattr(text_encoder, "image_model", None):
            check_collection(client, collection_name, text_encoder.image_model)  # the usual mismatch message
        self.thumb_size = thumb_size
        self.hits: list[Hit] = []
        self.query = widgets.Text(placeholder=placeholder, description="Query",
                                  layout=widgets.Layout(width="420px"))
        self.k = widgets.IntSlider(value=top_k, min=1, max=max_k, description="k")
        self.submit = widgets.Button(description="Search", button_style="primary", icon="search")
        # what the photos say about themselves, as filters (filters.photo_filter), and a score cutoff
        self.after = widgets.DatePicker(description="taken from", layout=widgets.Layout(width="260px"))
        self.before = widgets.DatePicker(description="to", layout=widgets.Layout(width="220px"))
        self.camera = widgets.Combobox(options=camera_names(client, collection_name), placeholder="e.g. pixel",
                                       description="camera", ensure_option=False, layout=widgets.Layout(width="260px"))
        self.min_score = widgets.BoundedFloatText(value=0.0, min=0.0, max=1.0, step=0.05, description="min score",
                                                  layout=widgets.Layout(width="180px"))
        self.status = widgets.HTML()
        self.results = widgets.GridBox(layout=widgets.Layout(
            grid_template_columns=f"repeat(auto-fill, {thumb_size + 20}px)", grid_gap="8px"))
        self.submit.on_click(lambda _button: self.search())
        # "more like this photo": a photo of the learner's own, read in memory, never saved
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Your photo")
        self.upload.observe(lambda _change: self.search_upload(), names="value")

    @property
    def widget(self) -> widgets.VBox:
        """The whole panel, to display in a notebook cell."""
        return widgets.VBox([widgets.HBox([self.query, self.k, self.submit, self.upload]),
                             widgets.HBox([self.after, self.before, self.camera, self.min_score]), self.status,
                             self.results, widgets.HTML("<style>.textimg-thumb { cursor: pointer; }</style>")])

    def list_cameras(self) -> None:
        """The camera box's choices: the cameras of the collection's photos (any text still works)."""
        self.camera.options = camera_names(self.client, self.collection_name)

    def photo_filter(self) -> str:
        """The Milvus filter of the date and camera boxes ("" when they are empty)."""
        after, before = (d.isoformat() if d else None for d in (self.after.value, self.before.value))
        return collection_filter(self.client, self.collection_name, after, before, self.camera.value.strip() or None)

    @property
    def more_buttons(self) -> list[widgets.Button]:
        """The "more like this" button of each result, in order."""
        return [card.children[2] for card in self.results.children]

    def search(self) -> None:
        """Search for the query box's text or combined query (``a red circle - red + blue``); errors go
        to the status line."""
        try:
            terms = parse_expression(self.query.value)
        except Exception as exc:  # an empty query, a bad weight, an unreadable image
            self.show_status(str(exc) or type(exc).__name__, error=True)
            return
        self._run(lambda: search_by_terms(self.client, self.collection_name, self.encoder, terms,
                                          top_k=self.k.value, filter=self.photo_filter(),
                                          text_encoder=self.text_encoder),
                  f"for {describe_terms(terms)}")

    def more_like(self, hit: Hit) -> None:
        """Search for the images closest to the image of ``hit`` ("more like this")."""
        self._run(lambda: search_by_image(self.client, self.collection_name, self.encoder, hit.filepath,
                                          top_k=self.k.value, filter=self.photo_filter()),
                  f"like {Path(hit.filepath).name}")

    def search_upload(self) -> None:
        """"More like this photo": the images closest to the photo given to the upload button, checked like
        any query image and read from memory (never written to disk); then the button is emptied, so
        that the same photo can be given again."""
        files = uploaded_files(self.upload.value)
        if not files:
            return
        name, content = files[0]
        self._run(lambda: search_by_photo_bytes(self.client, self.collection_name, self.encoder, content, name,
                                                top_k=self.k.value, filter=self.photo_filter()),
                  f"like your photo {Path(name).name}")
        self.upload.value = {} if isinstance(self.upload.value, dict) else ()

    def _run(self, find: Callable[[], list[Hit]], title: str) -> None:
        """Call ``find``, then show its hits under "top n <title>", or the error (hits stay as they were)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                found = find()
            except Exception as exc:  # a panel shows errors; it never raises into the notebook
                self.show_status(str(exc) or type(exc).__name__, error=True)
                return
        hits = [hit for hit in found if hit.score >= self.min_score.value] if self.min_score.value else found
        if found and not hits:
            self.show_status(f"no results with a score of at least {self.min_score.value:g} (the best scored "
                             f"{found[0].score:.3f})", error=False)
            self.show_hits([])
            return
        self.show_hits(hits)
        notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        self.show_status("; ".join([f"top {len(hits)} {title}"] + notes), error=False)

    def show_hits(self, hits: list[Hit]) -> None:
        """Replace the thumbnails with one card per hit."""
        self.hits, old = list(hits), self.results.children
        self.results.children = [self.result_card(hit) for hit in self.hits]
        for card in old:
            close_widgets(card)

    def result_card(self, hit: Hit) -> widgets.VBox:
        """Thumbnail, ``label score`` caption and a "more like this" button for one hit."""
        image = widgets.Image(value=png_bytes(hit.filepath, self.thumb_size), format="png",
                              width=self.thumb_size, height=self.thumb_size)
        caption = widgets.HTML(f'<span title="{html.escape(hit.filepath)}">'  # the path shows on hover
                               f"{html.escape(hit.label)} {hit.score:.3f}</span>")
        more = widgets.Button(description="more like this", layout=widgets.Layout(width=f"{self.thumb_size}px"))
        more.on_click(lambda _button: self.more_like(hit))
        if Event is not None:  # a click on the picture is "more like this" too
            image.add_class("textimg-thumb")
            click = Event(source=image, watched_events=["click"])
            click.on_dom_event(lambda _event: self.more_like(hit))
            image._textimg_click = click  # lives as long as its card
        return widgets.VBox([image, caption, more])

    def show_status(self, text: str, error: bool = False) -> None:
        """One line above the results: what is shown, or in red what went wrong."""
        self.status.value = status_html(text, error)


def close_widgets(widget) -> None:
    """Close a widget and all it holds: a replaced card's thumbnail bytes stay in the kernel otherwise."""
    for child in getattr(widget, "children", ()):
        close_widgets(child)
    for part in (getattr(widget, "_textimg_click", None), getattr(widget, "layout", None),
                 getattr(widget, "style", None)):
        if part is not None:  # each card's widget has its own layout and style widgets
            part.close()
    widget.close()


def uploaded_files(value) -> list[tuple[str, bytes]]:
    """``(name, content)`` of each file of a ``FileUpload``'s value: ipywidgets 8 gives a tuple of dicts,
    ipywidgets 7 (older Colab runtimes) a dict by name."""
    if isinstance(value, dict):
        return [(name, bytes(item["content"])) for name, item in value.items()]
    return [(item["name"], bytes(item["content"])) for item in value]


def status_html(text: str, error: bool = False) -> str:
    """One line of text, in red for an error (the panel's and the app's status lines)."""
    colour = ERROR_COLOUR if error else "#444"
    return f'<span style="color:{colour}">{html.escape(text)}</span>'


def png_bytes(filepath: str, size: int = THUMB_SIZE) -> bytes:
    """A PNG thumbnail of an image (a grey square if it cannot be read)."""
    buffer = io.BytesIO()
    thumbnail(filepath, size).save(buffer, format="PNG")
    return buffer.getvalue()
