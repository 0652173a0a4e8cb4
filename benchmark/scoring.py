"""Word and character error rates after Whisper's normalisation, with numbers written one way on both sides."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import jiwer

# The telephony prompt scripts write the keys; the voice actors say their names.
_KEY_WORDS = {
    "en": ("star", "pound"),
    "es": ("asterisco", "numeral"),
    "it": ("asterisco", "cancelletto"),
    "ru": ("звёздочка", "решётка"),
}

# Written without spaces between words: a "word" there is a whole phrase, so only CER means anything.
UNSPACED = frozenset({"zh", "yue", "ja", "th", "lo", "km", "my", "bo"})

ENGLISH = "whisper-english"
BASIC = "whisper-basic"
NUMBERS = "whisper-basic+num2words"

# "1.234" and "1,234": thousands as one number; a decimal such as "28,8" keeps its separator.
_THOUSANDS = re.compile(r"(?<=\d)[.,\u00a0\u202f](?=\d{3}(?!\d))")
_DIGITS = re.compile(r"\d+")


def languages_of(label: str | None) -> tuple[str, ...]:
    """The languages of a label: `zh+en` (code-switched) is two."""
    return tuple(part for part in (label or "").split("+") if part)


def spaced(label: str | None) -> bool:
    """False when words are not separated by spaces in (one of) the label's languages: score by CER."""
    return not UNSPACED.intersection(languages_of(label))


@lru_cache(maxsize=1)
def _num2words_languages() -> frozenset[str]:
    from num2words import CONVERTER_CLASSES  # type: ignore[import-untyped]

    return frozenset(CONVERTER_CLASSES)


def _numbers_language(label: str | None) -> str | None:
    """The language whose words numerals are spelled in: a single language num2words knows, other than English."""
    parts = languages_of(label)
    if len(parts) != 1 or parts[0] == "en" or parts[0] not in _num2words_languages():
        return None
    return parts[0]


def normaliser_name(label: str | None) -> str:
    """What `normalise` does for this language, as the tables name it."""
    if label == "en":
        return ENGLISH
    return NUMBERS if _numbers_language(label) else BASIC


@lru_cache(maxsize=2)
def _normaliser(english: bool) -> Any:
    if english:
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def _spell(number: str, language: str) -> str:
    """A numeral in words; with a leading zero (a code, "007") digit by digit, as it is read."""
    from num2words import num2words

    if number.startswith("0") and len(number) > 1:
        return " " + " ".join(str(num2words(int(digit), lang=language)) for digit in number) + " "
    return f" {num2words(int(number), lang=language)} "


def spell_numbers(text: str, language: str) -> str:
    """Every numeral in the text written out in the language's words."""
    return _DIGITS.sub(lambda match: _spell(match.group(), language), _THOUSANDS.sub("", text))


def normalise(text: str, language: str | None) -> str:
    """Whisper's English normaliser for English (numbers as numerals), its basic one otherwise with numerals
    spelled out by num2words where it knows the language; `*` and `#` spoken as words."""
    star, pound = _KEY_WORDS.get(language or "", ("", ""))
    if star:
        text = text.replace("*", f" {star} ").replace("#", f" {pound} ")
    numbers = _numbers_language(language)
    if numbers:
        text = spell_numbers(text, numbers)
    normalised: str = _normaliser(language == "en")(text)
    return " ".join(word for word in normalised.split() if any(c.isalnum() for c in word))


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[float, float]:
    """Corpus WER and CER over normalised pairs; pairs whose reference normalises to nothing are left out."""
    pairs = [(ref, hyp) for ref, hyp in zip(references, hypotheses, strict=True) if ref]
    if not pairs:
        return float("nan"), float("nan")
    refs, hyps = [ref for ref, _ in pairs], [hyp for _, hyp in pairs]
    return float(jiwer.wer(refs, hyps)), float(jiwer.cer(refs, hyps))


def _squeezed(text: str) -> str:
    return "".join(text.split())


def scores(references: Sequence[str], hypotheses: Sequence[str], labels: Sequence[str | None]) -> tuple[float, float]:
    """Corpus WER over the pairs in spaced languages (NaN if none) and CER over all pairs, with the spaces taken
    out of those in unspaced ones (they carry nothing there). The texts are normalised already."""
    triples = list(zip(references, hypotheses, labels, strict=True))
    words = [(ref, hyp) for ref, hyp, label in triples if spaced(label)]
    chars = [(ref, hyp) if spaced(label) else (_squeezed(ref), _squeezed(hyp)) for ref, hyp, label in triples]
    wer = error_rates([r for r, _ in words], [h for _, h in words])[0]
    return wer, error_rates([r for r, _ in chars], [h for _, h in chars])[1]
