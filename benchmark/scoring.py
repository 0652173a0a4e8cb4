"""Word and character error rates after Whisper's normalisation."""

from __future__ import annotations

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


@lru_cache(maxsize=2)
def _normaliser(english: bool) -> Any:
    if english:
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def normalise(text: str, language: str | None) -> str:
    """Whisper's English normaliser for English, its basic one otherwise; `*` and `#` spoken as words."""
    star, pound = _KEY_WORDS.get(language or "", ("", ""))
    if star:
        text = text.replace("*", f" {star} ").replace("#", f" {pound} ")
    normalised: str = _normaliser(language == "en")(text)
    return " ".join(word for word in normalised.split() if any(c.isalnum() for c in word))


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[float, float]:
    """Corpus WER and CER over normalised pairs; pairs whose reference normalises to nothing are left out."""
    pairs = [(ref, hyp) for ref, hyp in zip(references, hypotheses, strict=True) if ref]
    if not pairs:
        return float("nan"), float("nan")
    refs, hyps = [ref for ref, _ in pairs], [hyp for _, hyp in pairs]
    return float(jiwer.wer(refs, hyps)), float(jiwer.cer(refs, hyps))
