"""The languages Whisper knows: code to English name (as OpenAI's API writes it)."""

from __future__ import annotations

_TABLE = """
en english|zh chinese|de german|es spanish|ru russian|ko korean|fr french|ja japanese|pt portuguese|tr turkish
pl polish|ca catalan|nl dutch|ar arabic|sv swedish|it italian|id indonesian|hi hindi|fi finnish|vi vietnamese
he hebrew|uk ukrainian|el greek|ms malay|cs czech|ro romanian|da danish|hu hungarian|ta tamil|no norwegian
th thai|ur urdu|hr croatian|bg bulgarian|lt lithuanian|la latin|mi maori|ml malayalam|cy welsh|sk slovak
te telugu|fa persian|lv latvian|bn bengali|sr serbian|az azerbaijani|sl slovenian|kn kannada|et estonian
mk macedonian|br breton|eu basque|is icelandic|hy armenian|ne nepali|mn mongolian|bs bosnian|kk kazakh
sq albanian|sw swahili|gl galician|mr marathi|pa punjabi|si sinhala|km khmer|sn shona|yo yoruba|so somali
af afrikaans|oc occitan|ka georgian|be belarusian|tg tajik|sd sindhi|gu gujarati|am amharic|yi yiddish
lo lao|uz uzbek|fo faroese|ht haitian creole|ps pashto|tk turkmen|nn nynorsk|mt maltese|sa sanskrit
lb luxembourgish|my myanmar|bo tibetan|tl tagalog|mg malagasy|as assamese|tt tatar|haw hawaiian|ln lingala
ha hausa|ba bashkir|jw javanese|su sundanese|yue cantonese
"""

LANGUAGES: dict[str, str] = {
    code: name
    for code, name in (entry.strip().split(" ", 1) for entry in _TABLE.replace("\n", "|").split("|") if entry.strip())
}
_BY_NAME = {name: code for code, name in LANGUAGES.items()}


def to_code(value: str) -> str | None:
    """The language code for a code or an English name, or None if Whisper does not know it."""
    key = value.strip().lower()
    if key in LANGUAGES:
        return key
    return _BY_NAME.get(key)


def to_name(code: str | None) -> str | None:
    """The English name of a language code."""
    return LANGUAGES.get(code) if code else None
