"""Colour and shape words in five languages, their grammar, and the captions and queries built from them.

One table, read by the training script (captions), the evaluation (one query per label and language)
and the tests. A phrase agrees with the noun's gender (and case, where a template needs another case):
"ein roter Kreis" / "ein rotes Quadrat", "um círculo vermelho" / "uma estrela vermelha",
"красный круг" / "красная звезда", "دائرة حمراء" / "مربع أحمر".
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import TextimgError
from .shapes import COLOURS, SHAPES

__all__ = ["LANGS", "LANGUAGES", "captions", "check_langs", "query_for", "split_label", "translate_label"]

LANGS = ("en", "de", "pt", "ru", "ar")


@dataclass(frozen=True)
class Language:
    """One language: how a colour and a shape make a phrase, and the templates that use the phrases.

    ``nouns`` maps a shape to (gender, form per case); ``adjectives`` a colour to its forms per
    (case, gender); ``phrases`` builds the slots the templates name (``{ind}``, ``{dat}``, ...).
    ``variants`` are spellings people type too (``ё`` as ``е``, ``أ`` as ``ا``): trained, never queried."""

    name: str
    templates: tuple[str, ...]  # training captions; the first is what people type, the second the eval query
    nouns: dict
    adjectives: dict
    variants: tuple[tuple[str, str], ...] = ()

    @property
    def query_template(self) -> str:
        """The evaluation query, the language's "a photo of a <colour> <shape>"."""
        return self.templates[1]


def _en(colour: str, shape: str) -> dict[str, str]:
    bare = f"{colour} {shape}"
    return {"bare": bare, "ind": ("an " if colour[0] in "aeiou" else "a ") + bare, "def": "the " + bare}


_DE_ENDINGS = {"ind": {"m": "er", "n": "es"}, "def": {"m": "e", "n": "e"}, "dat": {"m": "en", "n": "en"}}
_DE_ARTICLES = {"ind": {"m": "ein", "n": "ein"}, "def": {"m": "der", "n": "das"}, "dat": {"m": "einem", "n": "einem"}}


def _de(colour: str, shape: str) -> dict[str, str]:
    gender, noun = DE.nouns[shape]
    stem = DE.adjectives[colour]
    adjective = lambda case: stem if stem in ("lila", "rosa") else stem + _DE_ENDINGS[case][gender]  # noqa: E731
    slots = {case: f"{_DE_ARTICLES[case][gender]} {adjective(case)} {noun}" for case in _DE_ENDINGS}
    return {**slots, "bare": f"{adjective('ind')} {noun}"}


def _pt(colour: str, shape: str) -> dict[str, str]:
    gender, noun = PT.nouns[shape]
    adjective = PT.adjectives[colour][gender == "f"]
    bare = f"{noun} {adjective}"
    feminine = gender == "f"
    return {"bare": bare, "ind": ("uma " if feminine else "um ") + bare, "def": ("a " if feminine else "o ") + bare}


def _ru(colour: str, shape: str) -> dict[str, str]:
    gender, nominative, genitive = RU.nouns[shape]
    forms = RU.adjectives[colour]  # nominative m, nominative f, genitive m, genitive f
    female = gender == "f"
    return {"nom": f"{forms[female]} {nominative}", "gen": f"{forms[2 + female]} {genitive}"}


def _ar(colour: str, shape: str) -> dict[str, str]:
    gender, noun = AR.nouns[shape]
    adjective = AR.adjectives[colour][gender == "f"]
    return {"ind": f"{noun} {adjective}", "def": f"ال{noun} ال{adjective}"}


EN = Language(
    "English",
    ("{ind}", "a photo of {ind}", "{bare}", "a picture of {ind}", "a drawing of {ind}", "{ind} shape",
     "an image of {ind}", "a small {bare}", "a big {bare}", "a photo of {def}",
     "a {bare}", "a photo of a {bare}"),  # the last two: what people type without minding a/an
    nouns={s: ("", s) for s in SHAPES},  # the words are the generator's: shapes.SHAPES, shapes.COLOURS
    adjectives={c: c for c in COLOURS},
)
DE = Language(
    "Deutsch",
    ("{ind}", "ein Foto von {dat}", "{bare}", "{def}", "ein Bild von {dat}", "eine Zeichnung von {dat}",
     "ein Bild mit {dat}"),
    nouns={"circle": ("m", "Kreis"), "square": ("n", "Quadrat"), "triangle": ("n", "Dreieck"),
           "star": ("m", "Stern"), "cross": ("n", "Kreuz")},
    # "lila" is not declined ("ein lila Kreis"); "orange" is, but only colloquially, so "orangefarben"
    adjectives={"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "orange": "orangefarben",
                "purple": "lila", "white": "weiß", "black": "schwarz"},
    variants=(("weiß", "weiss"), ("orangefarben", "orang")),  # Swiss spelling; colloquial "ein oranger Kreis"
)
PT = Language(
    "Português",
    ("{ind}", "uma foto de {ind}", "{bare}", "{def}", "uma imagem de {ind}", "um desenho de {ind}",
     "uma figura com {ind}"),
    nouns={"circle": ("m", "círculo"), "square": ("m", "quadrado"), "triangle": ("m", "triângulo"),
           "star": ("f", "estrela"), "cross": ("f", "cruz")},
    adjectives={"red": ("vermelho", "vermelha"), "green": ("verde", "verde"), "blue": ("azul", "azul"),
                "yellow": ("amarelo", "amarela"), "orange": ("laranja", "laranja"), "purple": ("roxo", "roxa"),
                "white": ("branco", "branca"), "black": ("preto", "preta")},
)
RU = Language(
    "Русский",
    ("{nom}", "фотография {gen}", "фото {gen}", "изображение {gen}", "рисунок {gen}", "на картинке {nom}",
     "{nom} на фото"),
    nouns={"circle": ("m", "круг", "круга"), "square": ("m", "квадрат", "квадрата"),
           "triangle": ("m", "треугольник", "треугольника"), "star": ("f", "звезда", "звезды"),
           "cross": ("m", "крест", "креста")},
    adjectives={"red": ("красный", "красная", "красного", "красной"),
                "green": ("зелёный", "зелёная", "зелёного", "зелёной"),
                "blue": ("синий", "синяя", "синего", "синей"),
                "yellow": ("жёлтый", "жёлтая", "жёлтого", "жёлтой"),
                "orange": ("оранжевый", "оранжевая", "оранжевого", "оранжевой"),
                "purple": ("фиолетовый", "фиолетовая", "фиолетового", "фиолетовой"),
                "white": ("белый", "белая", "белого", "белой"),
                "black": ("чёрный", "чёрная", "чёрного", "чёрной")},
    variants=(("ё", "е"),),
)
AR = Language(
    "العربية",
    ("{ind}", "صورة {ind}", "{def}", "رسم {ind}", "صورة فيها {ind}", "شكل {ind}"),
    nouns={"circle": ("f", "دائرة"), "square": ("m", "مربع"), "triangle": ("m", "مثلث"),
           "star": ("f", "نجمة"), "cross": ("m", "صليب")},
    adjectives={"red": ("أحمر", "حمراء"), "green": ("أخضر", "خضراء"), "blue": ("أزرق", "زرقاء"),
                "yellow": ("أصفر", "صفراء"), "orange": ("برتقالي", "برتقالية"), "purple": ("بنفسجي", "بنفسجية"),
                "white": ("أبيض", "بيضاء"), "black": ("أسود", "سوداء")},
    variants=(("أ", "ا"),),
)
LANGUAGES: dict[str, Language] = {"en": EN, "de": DE, "pt": PT, "ru": RU, "ar": AR}
_PHRASES = {"en": _en, "de": _de, "pt": _pt, "ru": _ru, "ar": _ar}


def check_langs(langs: str | list[str]) -> list[str]:
    """``"en,de"`` -> ``["en", "de"]``; refuses a language the table does not have."""
    langs = [lang.strip() for lang in langs.split(",")] if isinstance(langs, str) else list(langs)
    unknown = [lang for lang in langs if lang not in LANGUAGES]
    if unknown or not langs:
        raise TextimgError(f"unknown language {', '.join(unknown) or '(none)'}: use one or several of "
                           f"{','.join(LANGS)}, comma-separated")
    return langs


def split_label(label: str) -> tuple[str, str] | None:
    """``"red_circle"`` -> ``("red", "circle")``; None for a label the table cannot translate."""
    colour, _, shape = label.partition("_")
    return (colour, shape) if colour in EN.adjectives and shape in EN.nouns else None


def phrases(label: str, lang: str) -> dict[str, str]:
    """The slots of a label's phrase in a language: ``{"ind": "ein roter Kreis", "dat": ...}``."""
    parts = split_label(label)
    if parts is None:
        raise ValueError(f"{label!r} is not a <colour>_<shape> label of the language table")
    return _PHRASES[lang](*parts)


def query_for(label: str, lang: str, template: str | None = None) -> str:
    """The query for a label in a language (its ``query_template`` unless another is given)."""
    return (template or LANGUAGES[lang].query_template).format(**phrases(label, lang))


def translate_label(label: str, lang: str) -> str:
    """What people type for a label: "ein roter Kreis", "um círculo vermelho", "красный круг", "دائرة حمراء"."""
    return query_for(label, lang, LANGUAGES[lang].templates[0])


def captions(label: str, lang: str) -> list[str]:
    """Every caption of a label in a language (each template, and each spelling variant), no repeats."""
    found = [t.format(**phrases(label, lang)) for t in LANGUAGES[lang].templates]
    for spelled, typed in LANGUAGES[lang].variants:
        found += [caption.replace(spelled, typed) for caption in found if spelled in caption]
    return list(dict.fromkeys(found))
