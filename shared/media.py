"""Recognising media by its first bytes, never by the name or type a client claims."""

from __future__ import annotations

SNIFF_BYTES = 512

# (offset, magic, format); checked in order.
_SIGNATURES: list[tuple[int, bytes, str]] = [
    (0, b"fLaC", "flac"),
    (0, b"OggS", "ogg"),
    (0, b"ID3", "mp3"),
    (0, b"\x1a\x45\xdf\xa3", "matroska"),
    (4, b"ftyp", "mp4"),
    (0, b"#!AMR", "amr"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "asf"),
    (0, b".snd", "au"),
    (0, b"FLV", "flv"),
    (0, b"caff", "caf"),
    (0, b"MAC ", "ape"),
    (0, b"wvpk", "wavpack"),
    (0, b"\x00\x00\x01\xba", "mpeg"),
]
_RIFF_KINDS = {b"WAVE": "wav", b"AVI ": "avi", b"RF64": "wav"}
_AIFF_KINDS = {b"AIFF": "aiff", b"AIFC": "aiff"}


def sniff(head: bytes) -> str | None:
    """The container format these first bytes start, or None if they start no media we know."""
    for offset, magic, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    if head[:4] in (b"RIFF", b"RF64"):
        return _RIFF_KINDS.get(head[8:12])
    if head[:4] == b"FORM":
        return _AIFF_KINDS.get(head[8:12])
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "mpeg-audio"  # an MP3 or ADTS AAC frame header
    if len(head) > 376 and all(_ts_packet(head[offset : offset + 4]) for offset in (0, 188, 376)):
        return "mpeg-ts"

    return None


def _ts_packet(header: bytes) -> bool:
    """An MPEG transport stream packet header: sync byte, no error flag, a defined adaptation field control."""
    return header[0] == 0x47 and not header[1] & 0x80 and (header[3] >> 4) & 0x3 != 0
