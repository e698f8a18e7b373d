"""The ``textimg`` command line (also ``python -m textimg_helpers``).

One ``cmd_<name>(job, args)`` per command, and the parser built beside them. Each command imports the
stages it needs when it runs, so that no command pays for what it does not use: torch only where a
model is loaded, pymilvus once the arguments are known good, matplotlib only for a grid.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import unicodedata
import warnings
from pathlib import Path

from .config import CLIP_MODEL, PROFILES, Settings, TextimgError, default_collection, error_text, resolved_path
from .session import Session

__all__ = ["main"]

DEMO_GRID = Path("outputs") / "demo_grid.png"


def say(*parts) -> None:
    """Messages for people go to stderr, so stdout stays clean for scripts (``--json``)."""
    print(*parts, file=sys.stderr, flush=True)


def printable(text: str) -> str:
    """``text`` for a terminal: control and format characters (newlines, escape sequences, right-to-left
    overrides) written as escapes, and a backslash as two, so one path is one line and two paths never
    print alike (``a<newline>b`` is ``a\\nb``, a name holding backslash-n is ``a\\\\nb``); ``--json`` is exact."""
    return "".join(char.encode("unicode_escape").decode("ascii") if char == "\\" or unicodedata.category(char)
                   in ("Cc", "Cf") else char for char in text)


def say_path(line: str) -> None:
    """``say`` a line that holds paths, ``printable``."""
    say(printable(line))


def open_job(args) -> Session:
    """The command's session: ``TEXTIMG_*`` settings with the command's options on top."""
    settings = Settings.from_env().with_(profile=args.profile, model=args.model, milvus_uri=args.uri,
                                         device=args.device, collection_name=args.collection,
                                         text_model=getattr(args, "text_model", None),
                                         cache=getattr(args, "cache", None))
    return Session.from_settings(settings, args.random_weights, announce=say)


def cmd_index(job: Session, args) -> int:
    from .ingest import IndexOptions, LoadLater, index_folder

    options = IndexOptions(batch_size=args.batch_size, num_workers=args.workers, write_every=args.write_every,
                           remove_missing=not args.keep_missing, include_hidden=args.include_hidden,
                           exclude=tuple(args.exclude), upgrade=args.upgrade, ocr=args.ocr,
                           progress=not args.quiet, verbose=not args.quiet)
    report = index_folder(job.connect(), job.collection_name, args.folder,
                          LoadLater(job.model_name, job.load_encoder), options)
    if args.debug and report.read_as:
        say(f"textimg: read as: {report.read_paths()}")
    print(report)
    return 0


def cmd_search(job: Session, args) -> int:
    from .search import check_terms, describe_terms, parse_terms, search_by_terms, search_words_and_image, words_of
    from .evaluate import ENSEMBLE_TEMPLATES
    from .store import open_collection, search_by_words

    terms = check_terms(parse_terms(args.query, args.plus, args.minus))  # fail fast, before loading anything
    args.grid = grid_path(args.grid)
    client = job.connect(read_only=True)
    open_collection(client, job.collection_name, job.query_model_name)
    args.where = photo_where(client, job.collection_name, args)
    title = describe_terms(terms) if len(terms) > 1 else args.query
    match = match_mode(client, job.collection_name, args.match, words_of(terms))
    if match == "words":  # Milvus alone: no model is loaded
        return print_hits(search_by_words(client, job.collection_name, words_of(terms), args.k, args.where), args, title)
    templates = ENSEMBLE_TEMPLATES if args.ensemble else None
    text_encoder = job.load_text_encoder() if job.text_model != "clip" else None
    encoder = job.load_encoder() if text_encoder is None or any(t.is_image for t in terms) else text_encoder
    search = search_words_and_image if match == "both" else search_by_terms
    hits = search(client, job.collection_name, encoder, terms, args.k, args.where, templates, text_encoder=text_encoder)
    return print_hits(hits, args, title=title)


def match_mode(client, collection_name: str, match: str | None, words: str) -> str:
    """``--match``: what a search compares, the words read in the pictures, the pictures, or both; by
    default both when the collection stores words and the query has some, else the pictures."""
    from .store import has_words

    if match is None:
        return "both" if words and has_words(client, collection_name) else "image"
    if match != "image" and not words:
        raise TextimgError(f"--match {match} searches the words read in the pictures for the words of a text "
                           "query; an image query searches the pictures (--match image)")
    return match


def photo_where(client, collection_name: str, args) -> str:
    """``--where`` and the photo options (``--after --before --camera --near``) as one Milvus filter,
    shown with ``--debug``; the options need a collection that stores the photos' metadata."""
    from .filters import collection_filter, combine, parse_near

    args.near = parse_near(args.near) if getattr(args, "near", None) else None
    where = combine(args.where, collection_filter(client, collection_name, args.after, args.before, args.camera,
                                                  args.near))
    if args.debug and where:
        say(f"textimg: filter: {where}")
    return where


def cmd_similar(job: Session, args) -> int:
    from .search import search_by_image
    from .store import open_collection

    args.grid = grid_path(args.grid)
    client = job.connect(read_only=True)
    open_collection(client, job.collection_name, job.model_name)
    args.where = photo_where(client, job.collection_name, args)
    hits = search_by_image(client, job.collection_name, job.load_encoder(), args.image, args.k, args.where)
    return print_hits(hits, args)


def print_hits(hits, args, title: str | None = None) -> int:
    """``score  path`` per line, or a JSON list with ``--json``; a grid PNG with ``--grid``. With
    ``--min-score``, only the hits scoring at least that, and one line when none does."""
    from .filters import by_date, within_km

    hits = found = within_km(hits, getattr(args, "near", None))
    if args.min_score is not None:
        hits = [hit for hit in hits if hit.score >= args.min_score]
    if getattr(args, "sort", "score") == "date":
        hits = by_date(hits)
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=1))
    else:
        for hit in hits:
            print(f"{hit.score:.3f}  {printable(hit.filepath)}")
    if args.grid:
        save_grid(hits, args.grid, title=title or getattr(args, "image", None))
    if not hits and found:
        say(f"no results with a score of at least {args.min_score:g} (the best scored {found[0].score:.3f})")
    elif not hits:
        say("no results" + (f" (filter: {args.where[:200]})" if args.where else ""))
    return 0


def grid_path(grid: str | None) -> Path | None:
    """``--grid``: a PNG unless another picture format is named; refused before any work if unknown."""
    if not grid:
        return None
    from matplotlib.figure import Figure

    path = Path(grid) if Path(grid).suffix else Path(grid).with_suffix(".png")
    formats = Figure().canvas.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in formats:
        raise TextimgError(f"--grid {grid}: {path.suffix} is not a picture format matplotlib writes "
                           f"({', '.join('.' + f for f in sorted(formats))})")
    return path


def save_grid(hits, path, title=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from .viz import show_results

    show_results(hits, title=title, save_to=path)
    say(f"grid written to {path}")


def cmd_eval(job: Session, args) -> int:
    from .evaluate import PHOTO_TEMPLATE, TEMPLATE_SETS, compare_templates, evaluate
    from .ingest import index_folder

    langs = check_eval_options(job, args)
    if args.models:
        return compare_models(job, args)
    # labelled test images get a collection of their own, so they never turn up in searches of your photos
    collection = job.settings.collection_name or default_collection(job.model_name) + "_eval"
    client, encoder = job.connect(), job.load_encoder()
    report = index_folder(client, collection, args.folder, encoder, batch_size=args.batch_size,
                          num_workers=args.workers, progress=not args.quiet)
    say(f"{report.summary()} (collection {collection})")
    if job.random_weights or job.model_name.startswith("shapes-clip"):
        say(f"note: {job.model_name} is " + ("a random-weights model: expect chance-level figures"
            if job.random_weights else "trained only on coloured shapes: expect low figures on photographs"))
    text_encoder = job.load_text_encoder()  # the image model's own, unless --text-model
    if langs:
        return print_language_table(job, args, collection, text_encoder)
    if args.compare:
        for name, result in compare_templates(client, collection, text_encoder, args.folder,
                                              progress=not args.quiet).items():
            print(f"{name:>9}: {result.summary()}")
        return 0
    templates = TEMPLATE_SETS["ensemble"] if args.ensemble else (args.template or PHOTO_TEMPLATE,)
    print(evaluate(client, collection, text_encoder, args.folder, templates, progress=not args.quiet))
    return 0


def compare_models(job: Session, args) -> int:
    """``eval --models A,B``: the folder indexed once per model (incrementally, each model in its own
    collection of the file), then one row per model: images/s of this run's indexing and the figures."""
    from .evaluate import PHOTO_TEMPLATE, evaluate, model_comparison_table
    from .ingest import index_folder

    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        session = Session.from_settings(job.settings.with_(model=model), job.random_weights, announce=say)
        collection = default_collection(session.model_name) + "_eval"
        client, encoder = session.connect(), session.load_encoder()
        report = index_folder(client, collection, args.folder, encoder, batch_size=args.batch_size,
                              num_workers=args.workers, progress=not args.quiet)
        say(f"{session.model_name}: {report.summary()} (collection {collection})")
        result = evaluate(client, collection, encoder, args.folder, (args.template or PHOTO_TEMPLATE,),
                          progress=not args.quiet)
        rows.append((session.model_name, report.indexed / report.seconds if report.indexed else None, result))
    print(model_comparison_table(rows))
    return 0


def check_eval_options(job: Session, args) -> list[str] | None:
    """Refuse, before any work, a template without ``{}``, a language that cannot phrase every label,
    or a text model whose space is not the image model's; returns the languages of ``--lang``."""
    from .evaluate import check_labels_translate, labelled_images
    from .languages import check_langs

    if args.template and (args.template.count("{}") != 1 or set("{}") & set(args.template.replace("{}", "", 1))):
        raise TextimgError(f"--template needs a {{}} where the label goes, once and with no other braces, "
                           f"e.g. 'a photo of a {{}}', not {args.template!r}")
    if args.models and (args.lang or args.compare or args.ensemble or job.text_model != "clip"):
        raise TextimgError("--models compares models with one template ('a photo of a {}', or --template): "
                           "leave out --lang, --compare, --ensemble and --text-model")
    if args.models and args.collection:
        raise TextimgError("--models gives each model a collection of its own: leave out --collection")
    langs = check_langs(args.lang) if args.lang else None
    if langs:
        check_labels_translate(labelled_images(args.folder), langs)
    if job.model_name != job.query_model_name:
        raise TextimgError(f"--text-model {job.text_model} reads queries into {job.query_model_name}'s space, but "
                           f"the images would be encoded with {job.model_name}: use --profile clip "
                           f"(or --model {job.query_model_name}) without --random-weights")
    return langs


def print_language_table(job: Session, args, collection: str, text_encoder) -> int:
    """``eval --lang``: the per-language table of ``collection``; with another text model, the image
    model's own text encoder (English-only for CLIP) is measured beside it for comparison."""
    from .evaluate import evaluate_languages, language_table
    from .languages import check_langs

    client, encoder, langs = job.connect(), job.load_encoder(), check_langs(args.lang)
    columns = {text_encoder.name: evaluate_languages(client, collection, text_encoder, args.folder, langs,
                                                     progress=not args.quiet)}
    if text_encoder is not encoder:
        columns[f"{job.model_name} text encoder"] = evaluate_languages(client, collection, encoder, args.folder,
                                                                       langs, progress=not args.quiet)
    print(language_table(columns))
    return 0


def cmd_duplicates(job: Session, args) -> int:
    """Groups of near-duplicates, biggest first: a ``group N: M images, <tier>`` line, then ``score  path``
    per image (the first is the one closest to all the others; score = cosine to it); a summary line
    last. ``--move-extras-to DIR`` then keeps one image per group and moves the others; ``--undo LIST``
    puts them back."""
    from .duplicates import find_duplicates, tier
    from .moves import move_extras, undo_moves
    from .store import open_collection

    client = job.connect(read_only=True)
    open_collection(client, job.collection_name)  # reads stored vectors: no model is loaded
    if args.undo:
        restored = undo_moves(client, job.collection_name, args.undo, say=say_path)
        print(f"restored={restored} list={args.undo}")
        return 0
    args.where = photo_where(client, job.collection_name, args)  # --near: the box of the place
    groups, n_rows = find_duplicates(client, job.collection_name, args.threshold, args.where)
    tiers = [tier(group, args.near_identical) for group in groups]
    if args.json:
        print(json.dumps([{"size": len(g), "tier": t, "images": [h.to_dict() for h in g]}
                          for g, t in zip(groups, tiers)], ensure_ascii=False, indent=1))
    else:
        for number, (group, kind) in enumerate(zip(groups, tiers), 1):
            print(f"group {number}: {len(group)} images, {kind}")
            for hit in group:
                print(f"{hit.score:.3f}  {printable(hit.filepath)}")
        print(f"groups={len(groups)} images={sum(map(len, groups))} rows={n_rows} threshold={args.threshold:g}")
    if args.move_extras_to:
        moved, kept, listing = move_extras(client, job.collection_name, groups, args.move_extras_to,
                                           args.near_identical, say=say_path)
        say(f"moved={moved} kept={kept} list={listing} (undo: textimg duplicates --undo {listing})")
    return 0


def cmd_stats(job: Session, args) -> int:
    from .store import collection_info, count_rows

    client = job.connect(read_only=True)
    info = collection_info(client, job.collection_name)
    print(f"rows={count_rows(client, job.collection_name)} model={info['model']} dim={info['dim']}")
    return 0


def cmd_drop(job: Session, args) -> int:
    from .store import drop_collection

    if not args.yes:
        raise TextimgError(f"dropping deletes every row of {job.collection_name!r}: add --yes to confirm")
    drop_collection(job.connect(read_only=True), job.collection_name)
    print(f"dropped {job.collection_name}")
    return 0


def cmd_demo(job: Session, args) -> int:
    from .ingest import index_folder
    from .search import search_by_text

    folder = job.image_folder()
    query = job.demo_query
    say(f"profile={job.profile} model={job.model_name} images={folder} milvus={job.settings.uri}")
    client, encoder = job.connect(), job.load_encoder()
    report = index_folder(client, job.collection_name, folder, encoder, batch_size=args.batch_size,
                          num_workers=args.workers, progress=not args.quiet)
    say(report.summary())
    hits = search_by_text(client, job.collection_name, encoder, query, top_k=10)
    print(f"top 10 for {query!r}:")
    for hit in hits:
        print(f"{hit.score:.3f}  {printable(hit.filepath)}")
    save_grid(hits, DEMO_GRID, title=query)
    return 0


def cmd_app(args) -> int:
    """Serve the search page on 127.0.0.1 until Ctrl-C (Voila rendering the page of ``app``)."""
    from .web.server import check_voila, serve_app

    check_voila()  # before the settings are resolved: the missing package is the news
    code = serve_app(open_job(args), args.port, args.debug, announce=lambda line: print(line, flush=True),
                     token=args.token, cull_idle=args.cull_idle)
    say("textimg app: stopped")
    return code


def cmd_models(args) -> int:
    """The table of models; with ``--measure``, timed on this machine first."""
    import platform
    import time

    from .encoders import pick_device
    from .models import MODELS, measure_speed, models_table

    speed = None
    if args.measure:
        device = pick_device(args.device)
        speed = {"what": f"measured with random weights, fp32, {device}", "machine": platform.processor() or
                 platform.machine(), "date": time.strftime("%Y-%m-%d"), "models": {}}
        for model in MODELS:
            say(f"timing {model.name} ...")
            try:
                speed["models"][model.name] = measure_speed(model.name, device=device)
            except TextimgError as exc:  # e.g. a tokenizer that needs a download
                say(f"  not timed: {exc}")
    print(models_table(speed))
    return 0


def cmd_download(args) -> int:
    """Fill a folder with the clip profile's files (``bundle.download_bundle``)."""
    from .bundle import download_bundle

    settings = Settings.from_env()
    folder = resolved_path(args.to or settings.cache or settings.data_dir / "offline")
    say(f"downloading into {folder}")
    download_bundle(folder, tuple(args.model) or (CLIP_MODEL,), images=not args.no_images,
                    text_model=args.text_model, announce=print)
    return 0


def cmd_serve(args) -> int:
    """Run the shared Milvus Lite service of a file in the foreground, or show or stop it."""
    import psutil

    from .milvus import is_lite
    from .service.client import read_state, service_uri, spawn_service, start_lock, stop_service, terminate
    from .service.files import available

    uri = args.uri or Settings.from_env().uri
    if not is_lite(uri):
        raise TextimgError(f"textimg serve shares a Milvus Lite file; {uri} is a server URI, already shared")
    if not available():
        raise TextimgError("the shared service needs Milvus Lite 2.5 (Linux, macOS); here each process "
                           "opens the file itself, one at a time")
    db = resolved_path(uri)
    if args.status or args.stop:
        state = stop_service(db) if args.stop else read_state(db)
        if state is None:
            print(f"no service for {db}")
            return 0 if args.stop else 3
        print(f"{'stopped' if args.stop else 'serving'} {db} at {service_uri(state)} (pid {state['pid']})")
        return 0
    with start_lock(db):
        if (state := read_state(db)) is not None:
            raise TextimgError(f"{db} is already served at {service_uri(state)} (pid {state['pid']}): "
                               "textimg serve --stop first to serve it here")
        state, child = spawn_service(db, uri, args.idle or 0.0, detach=False)
    print(f"serving {db} at {service_uri(state)}", flush=True)
    try:
        child.wait()
    except KeyboardInterrupt:
        terminate([psutil.Process(child.pid)])
    say(f"stopped serving {db}")
    return 0


TEXT_MODEL_HELP = ("clip (default: the model's own text encoder), multilingual (queries in 50+ languages "
                   "against a ViT-B/32 collection; pip install 'textimg-helpers[multilingual]'), or a "
                   "sentence-transformers folder; overrides TEXTIMG_TEXT_MODEL")
QUERY_HELP = "the text to search for, or an image file; WEIGHT:TERM weights it (e.g. 2:'a dog')"
TERMS_HELP = """combined queries: textimg search "a dog" --plus photo.jpg --minus "grass" searches with
the weighted sum of the terms' unit vectors, normalised again. A term is an image when it ends in
an image extension (.jpg .jpeg .png .gif .bmp .webp .tif .tiff .avif .heic .heif, camera RAW;
any case; it must be a readable file), else it is text. WEIGHT:TERM weights a term (2:'a dog', 0.5:photo.jpg; default 1)."""
DUPLICATES_HELP = """Groups of near-duplicate images: images whose stored vectors have a cosine of at
least --threshold, and the images those link to. Biggest groups first, each as
  group N: M images
  <score>  <path>      (first the image closest to all the others; score = cosine to it)
and a last line
  groups=<n> images=<in groups> rows=<read> threshold=<t>
The collection's stored vectors are read: no model is loaded."""
APP_HELP = """Serve a search page at http://127.0.0.1:PORT/ (Voila renders a notebook shipped in the
package): a query box (combined queries too), k, thumbnails with label and score (the path on hover),
"more like this" and "add to query" under each; a folder box and an Index button (incremental, with a
progress bar and the skipped files' reasons); near-duplicate groups; the collection's row count and
model. It listens on 127.0.0.1 only and has no login: see docs/app.md to open it from another machine.
It uses the same shared Milvus Lite service as the notebooks and the other commands."""
FROM_HELP = ("a folder made by textimg download: the clip profile from it, with no network; overrides "
             "TEXTIMG_CACHE")
DOWNLOAD_HELP = """Download what the clip profile needs into one folder, for machines without internet: CLIP's
weights (as clip.load(download_root=DIR/clip) keeps them; sha256 checked), the tutorial's images
(extracted; zip CRC checked) and, with --text-model multilingual, that text model. A cut download
resumes; what is there and good is kept. Copy the folder (USB stick, shared folder), then
TEXTIMG_CACHE=DIR or --from DIR: the clip profile runs from it with no network, and auto picks it."""
WORKERS_HELP = "decoder processes (default: 0 = threads, on up to 4 cores; else half the cores)"


def common_options() -> argparse.ArgumentParser:
    """The options every command but ``serve`` takes: where Milvus is, which model, how verbose."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--uri", help="Milvus URI: a Milvus Lite file (default data/milvus.db) or http://host:19530")
    common.add_argument("--collection", help="collection name (default: one per model, e.g. textimg_vit_b_32)")
    common.add_argument("--model", help="CLIP name such as ViT-B/32, or a checkpoint path")
    common.add_argument("--random-weights", action="store_true",
                        help="the model's architecture with random weights (speed/mechanics checks only)")
    common.add_argument("--profile", choices=PROFILES, help="overrides TEXTIMG_PROFILE")
    common.add_argument("--device", help="cpu, cuda, mps (default: auto)")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    common.add_argument("--from", dest="cache", metavar="DIR", help=FROM_HELP)
    return common


def add_reading_options(p: argparse.ArgumentParser) -> None:
    """``--batch-size`` and ``--workers``, for the commands that index images."""
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, help=WORKERS_HELP)


def add_index_commands(sub, common) -> None:
    """``demo`` and ``index``."""
    p = sub.add_parser("demo", parents=[common], help="index the profile's images and run its query")
    add_reading_options(p)
    p = sub.add_parser("index", parents=[common], help="index a folder of images (incremental)")
    p.add_argument("folder")
    add_reading_options(p)
    p.add_argument("--write-every", type=int, default=256,
                   help="rows per write to Milvus (default 256; fewer loses less work if the run is killed)")
    p.add_argument("--keep-missing", action="store_true",
                   help="keep the rows of files that are no longer in FOLDER (default: remove them)")
    p.add_argument("--include-hidden", action="store_true",
                   help="also index hidden files and folders (.thumbnails, .git...) and system folders (@eaDir, "
                        "#recycle, $RECYCLE.BIN, System Volume Information, node_modules), left out by default")
    p.add_argument("--upgrade", action="store_true",
                   help="give a collection made by an older version the date, camera and place fields "
                        "(its vectors are kept: nothing is encoded again)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out the paths (relative to FOLDER, with /) matching GLOB, e.g. 'private/*' or "
                        "'*.gif'; repeatable")
    p.add_argument("--ocr", action="store_true",
                   help="also read the words written in the pictures, for search --match words|both (the ocr "
                        "extra; a collection indexed without it gets its words read, nothing encoded again; "
                        "once a collection has words, every later index reads them)")


def add_photo_filters(p) -> None:
    """``--after --before --camera --near``: what the photos say about themselves, as Milvus filters."""
    p.add_argument("--after", metavar="YYYY-MM-DD", help="only photos taken on or after this day")
    p.add_argument("--before", metavar="YYYY-MM-DD", help="only photos taken on or before this day")
    p.add_argument("--camera", metavar="TEXT", help="only photos whose camera make or model holds TEXT (any case)")
    p.add_argument("--near", metavar="LAT,LON[,KM]", help="only photos taken within KM (default 1) of this place")


def add_search_commands(sub, common) -> None:
    """``search`` (text, or combined terms) and ``similar`` (an example image)."""
    for name, target, helptext in (("search", "query", "search by text (and images: combined queries)"),
                                   ("similar", "image", "search by example image")):
        p = sub.add_parser(name, parents=[common], help=helptext, epilog=TERMS_HELP if name == "search" else None)
        p.add_argument(target, help=QUERY_HELP if name == "search" else None)
        p.add_argument("-k", type=int, default=10, help="how many results (default 10)")
        p.add_argument("--json", action="store_true", help="print only a JSON list of hits")
        p.add_argument("--grid", help="also write a PNG grid of the results here")
        p.add_argument("--where", default="", help='Milvus filter, e.g. \'label == "red_circle"\'')
        p.add_argument("--min-score", type=float, metavar="S",
                       help="only the hits with a cosine of at least S (of the top k; none: says so); with "
                            "search --match words, a BM25 score, with --match both, the fused score")
        add_photo_filters(p)
        p.add_argument("--sort", choices=["score", "date"], default="score",
                       help="order of the hits: best first (default) or newest first")
    search = sub.choices["search"]
    search.add_argument("--ensemble", action="store_true", help="average several prompt templates")
    search.add_argument("--text-model", help=TEXT_MODEL_HELP)
    search.add_argument("--plus", action="append", default=[], metavar="TERM",
                        help="add a text or an image file to the query (repeatable)")
    search.add_argument("--minus", action="append", default=[], metavar="TERM",
                        help="subtract a text or an image file from the query (repeatable)")
    search.add_argument("--match", choices=["words", "image", "both"],
                        help="what to compare: the words read in the pictures (BM25, index --ocr), the pictures "
                             "(CLIP), or both in one Milvus hybrid search fused by reciprocal rank (default: both "
                             "when the collection has words, else image)")


def add_collection_commands(sub, common) -> None:
    """``duplicates``, ``eval``, ``stats`` and ``drop``: commands about a collection."""
    p = sub.add_parser("duplicates", parents=[common], help="groups of near-duplicate images (no model loaded)",
                       description=DUPLICATES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threshold", type=float, default=0.95,
                   help="cosine at or above which two images are near-duplicates (default 0.95)")
    p.add_argument("--json", action="store_true", help="print only a JSON list of groups")
    p.add_argument("--where", default="", help="Milvus filter: look only at these rows")
    add_photo_filters(p)
    p.add_argument("--near-identical", type=float, default=0.98, metavar="C",
                   help="a group whose images are all at a cosine of at least C to its first is near-identical "
                        "(default 0.98); same bytes: identical; else similar")
    p.add_argument("--move-extras-to", metavar="DIR",
                   help="keep one image per group (most pixels, then earliest date, then shortest path) and move "
                        "the others into DIR, listed in DIR/textimg-moved.csv; nothing is deleted")
    p.add_argument("--undo", metavar="LIST", help="put back the files a --move-extras-to list names")
    p = sub.add_parser("eval", parents=[common], help="index a labelled folder, then measure recall@k and mAP@10")
    p.add_argument("folder", help="labels from sub-folder names or <wnid>_<label>.JPEG file names")
    p.add_argument("--template", help="query template, default 'a photo of a {}'")
    p.add_argument("--ensemble", action="store_true", help="average several templates (prompt ensembling)")
    p.add_argument("--compare", action="store_true", help="bare label vs 'a photo of a ...' vs ensemble")
    p.add_argument("--lang", help="queries in one or several of en,de,pt,ru,ar (comma-separated): a table per "
                                  "language (labels must be in the language table, e.g. red_circle)")
    p.add_argument("--models", help="compare models side by side (comma-separated, e.g. ViT-B/32,"
                                    "ViT-B-32/laion2b_s34b_b79k): the folder indexed once per model, each in its "
                                    "own collection; one row per model")
    p.add_argument("--text-model", help=TEXT_MODEL_HELP)
    add_reading_options(p)
    sub.add_parser("stats", parents=[common], help="rows, model and dimension of the collection")
    p = sub.add_parser("drop", parents=[common], help="delete the collection")
    p.add_argument("--yes", action="store_true")


def add_app_command(sub) -> None:
    """``app``: the search page; it takes the session's options, not the index options."""
    from .web.server import DEFAULT_PORT  # the standard library only: the parser stays quick to build

    p = sub.add_parser("app", help="serve a search page on 127.0.0.1 (Voila): search, more like this, "
                                   "index a folder, near-duplicates", description=APP_HELP)
    p.add_argument("--uri", help="Milvus URI: a Milvus Lite file (default data/milvus.db) or http://host:19530")
    p.add_argument("--collection", help="collection name (default: one per model, e.g. textimg_vit_b_32)")
    p.add_argument("--model", help="CLIP name such as ViT-B/32, or a checkpoint path")
    p.add_argument("--device", help="cpu, cuda, mps (default: auto)")
    p.add_argument("--profile", choices=PROFILES, help="overrides TEXTIMG_PROFILE")
    p.add_argument("--text-model", help=TEXT_MODEL_HELP)
    p.add_argument("--from", dest="cache", metavar="DIR", help=FROM_HELP)
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--token", help="the page's token (default: a new random one each run, printed in its "
                                   "address; other users of the machine see a --token given here in ps)")
    p.add_argument("--cull-idle", type=float, default=300.0, metavar="SECONDS",
                   help="stop the kernel of a page closed or disconnected for this long (default 300)")
    p.add_argument("--debug", action="store_true", help="show Voila's messages and, in the page, tracebacks")
    p.set_defaults(random_weights=False)


def add_models_command(sub) -> None:
    """``models``: the supported models, published quality beside measured speed (no session)."""
    p = sub.add_parser("models", help="which model to pick: published quality and measured speed")
    p.add_argument("--measure", action="store_true",
                   help="time each model on this machine first (random weights, fp32 on the CPU; a few minutes)")
    p.add_argument("--device", default="cpu", help="where --measure runs them (default cpu)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def add_download_command(sub) -> None:
    """``textimg download``: the clip profile's files into one folder, for offline machines."""
    p = sub.add_parser("download", help="download the clip profile's model and images into one folder (offline use)",
                       description=DOWNLOAD_HELP)
    p.add_argument("--to", metavar="DIR", help="the folder (default: TEXTIMG_CACHE, else data/offline)")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="an OpenAI CLIP model's weights, e.g. ViT-B/16 (default ViT-B/32; repeat for several)")
    p.add_argument("--text-model", choices=["clip", "multilingual"], default="clip",
                   help="multilingual: also the text model for queries in 50+ languages")
    p.add_argument("--no-images", action="store_true", help="the weights only, not the tutorial's images")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def add_serve_command(sub) -> None:
    """``serve``: it takes no model or collection, only the Lite file."""
    p = sub.add_parser("serve", help="share a Milvus Lite file between processes (runs in the foreground; "
                                     "started by itself when needed)")
    p.add_argument("--uri", help="the Milvus Lite file (default data/milvus.db)")
    p.add_argument("--idle", type=float, default=0,
                   help="stop after this many seconds with no client (default 0: only on Ctrl-C)")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--status", action="store_true", help="say whether and where it is served (exit 3 if not)")
    action.add_argument("--stop", action="store_true", help="stop the service of the file")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textimg", description="Text-to-image search with CLIP and Milvus.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = common_options()
    add_index_commands(sub, common)
    add_search_commands(sub, common)
    add_collection_commands(sub, common)
    add_serve_command(sub)
    add_app_command(sub)
    add_models_command(sub)
    add_download_command(sub)
    return parser


COMMANDS = {"demo": cmd_demo, "index": cmd_index, "search": cmd_search, "similar": cmd_similar,
            "duplicates": cmd_duplicates, "stats": cmd_stats, "drop": cmd_drop, "eval": cmd_eval}


def check_numbers(args) -> None:
    """Refuse out-of-range numbers and an empty ``--uri`` the way argparse refuses bad options (exit 2, usage)."""
    for option in ("batch_size", "k", "write_every"):
        if getattr(args, option, 1) < 1:
            flag = "-k" if option == "k" else "--" + option.replace("_", "-")
            build_parser().error(f"{flag} must be at least 1, not {getattr(args, option)}")
    if (getattr(args, "workers", None) or 0) < 0:
        build_parser().error(f"--workers must be 0 or more, not {args.workers}")
    if not 0 <= getattr(args, "port", 0) <= 65535:
        build_parser().error(f"--port must be between 0 and 65535, not {args.port}")
    if getattr(args, "uri", None) is not None and not args.uri.strip():
        build_parser().error("--uri is empty: give a Milvus Lite file (such as data/milvus.db) or a server URI "
                             "(http://localhost:19530), or leave --uri out for the default")
    if not 2 <= getattr(args, "cull_idle", 2) < float("inf"):
        build_parser().error(f"--cull-idle is at least 2 seconds, not {args.cull_idle}")
    if getattr(args, "min_score", None) is not None and not -1 <= args.min_score <= 1 and getattr(
            args, "match", None) != "words":  # a BM25 score has no upper bound
        build_parser().error(f"--min-score is a cosine between -1 and 1, not {args.min_score}")
    if not 0 < getattr(args, "threshold", 1) <= 1:
        build_parser().error(f"--threshold is a cosine above 0 and at most 1, not {args.threshold}")


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors print one readable line (a traceback only with ``--debug``)."""
    args = build_parser().parse_args(argv)
    check_numbers(args)
    token = os.environ.get("TEXTIMG_MILVUS_TOKEN", "")  # read as is: a bad setting is reported below, in one line
    from .milvus import pymilvus_log_level  # pymilvus is imported once the arguments are known good

    try:
        # pymilvus logs each failed call with a traceback; our error line says it all, except with --debug
        with pymilvus_log_level(logging.DEBUG if args.debug else logging.CRITICAL), warnings.catch_warnings():
            warnings.showwarning = lambda message, *_: say(f"textimg: warning: {redact(str(message), token)}")
            return run_command(args)
    except KeyboardInterrupt:
        say("textimg: interrupted; what was written is kept, run the same command again to continue")
        return 130
    except BrokenPipeError:  # `textimg search ... | head -1`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except Exception as exc:  # one line for the user, never the token
        if args.debug:
            raise
        say(f"textimg: error: {redact(error_line(exc), token)}")
        return 1


def run_command(args) -> int:
    """The command's function, with its session (``serve`` and ``models`` have none; ``app`` hands its
    settings to the page)."""
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "app":
        return cmd_app(args)
    if args.command == "models":
        return cmd_models(args)
    if args.command == "download":
        return cmd_download(args)
    return COMMANDS[args.command](open_job(args), args)


def error_line(exc: Exception) -> str:
    """The first line of an error; for one that is not ours, its type and where to find more."""
    text = error_text(exc)
    return text if isinstance(exc, TextimgError) else f"{text} (run with --debug for the traceback)"


def redact(text: str, secret: str) -> str:
    """Replace a secret (the Milvus token) wherever it appears."""
    return text.replace(secret, "***") if secret else text
