"""The language table writes each language's grammar right: gender, case, word order, a/an."""

import pytest

from textimg_helpers.languages import LANGS, captions, check_langs, query_for, translate_label
from textimg_helpers.config import TextimgError


@pytest.mark.parametrize("lang, label, typed", [
    ("en", "red_circle", "a red circle"), ("en", "orange_star", "an orange star"),
    ("de", "red_circle", "ein roter Kreis"), ("de", "red_square", "ein rotes Quadrat"),
    ("de", "red_triangle", "ein rotes Dreieck"), ("de", "red_star", "ein roter Stern"),
    ("de", "red_cross", "ein rotes Kreuz"), ("de", "purple_circle", "ein lila Kreis"),
    ("pt", "red_circle", "um círculo vermelho"), ("pt", "red_star", "uma estrela vermelha"),
    ("pt", "white_cross", "uma cruz branca"), ("pt", "orange_star", "uma estrela laranja"),
    ("ru", "red_circle", "красный круг"), ("ru", "red_star", "красная звезда"),
    ("ru", "blue_star", "синяя звезда"), ("ru", "blue_cross", "синий крест"),
    ("ar", "red_circle", "دائرة حمراء"), ("ar", "red_square", "مربع أحمر"),
    ("ar", "white_star", "نجمة بيضاء"), ("ar", "orange_circle", "دائرة برتقالية"),
])
def test_what_people_type_agrees_with_the_noun(lang, label, typed):
    assert translate_label(label, lang) == typed


def test_photo_queries_use_the_case_the_preposition_needs():
    assert query_for("red_square", "de") == "ein Foto von einem roten Quadrat"  # dative
    assert query_for("yellow_star", "ru") == "фотография жёлтой звезды"  # genitive, feminine
    assert query_for("black_triangle", "ru") == "фотография чёрного треугольника"  # genitive, masculine
    assert query_for("green_star", "pt") == "uma foto de uma estrela verde"
    assert query_for("red_circle", "ar") == "صورة دائرة حمراء"
    assert query_for("red_circle", "ar", "{def}") == "الدائرة الحمراء"  # the article on noun and adjective


def test_captions_add_the_spellings_people_type():
    assert "зеленый треугольник" in captions("green_triangle", "ru")  # ё typed as е
    assert "مربع احمر" in captions("red_square", "ar")  # hamza left out
    assert "ein oranger Kreis" in captions("orange_circle", "de")  # colloquial
    assert all(len(set(captions("red_circle", lang))) == len(captions("red_circle", lang)) for lang in LANGS)


def test_languages_are_checked():
    assert check_langs("en, de,ar") == ["en", "de", "ar"]
    with pytest.raises(TextimgError, match="unknown language xx"):
        check_langs("en,xx")
