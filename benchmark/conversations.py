"""Conversations with known answers, built from clips of one known speaker each, for scoring speaker labels.

python -m benchmark.conversations [--out benchmark-results/conversations] [--seed 18] [--only conv2_01,...]

Each conversation takes 2, 3 or 4 different people from ../shared/data and joins their clips into turns of 2 to
15 s (several clips of one person in a row where the clips are short), with pauses of 0.2 to 1.5 s between turns
and now and then a quick back-and-forth of 2 to 3.5 s turns. The people: Allison Smith (the English and Spanish
telephony prompts are both hers), Carlo Flora (Italian prompts), IvrvoiceRU (Russian prompts), the LJSpeech reader,
and the six speakers of the free-spoken-digit-dataset (the speaker is in the file name). Clips are resampled to
16 kHz mono, their leading and trailing silence cut and their peaks levelled; pauses are digital silence.

Written to --out: `<name>.wav`, `<name>.rttm` (one line per turn), `<name>.stm` where every clip has an English
reference (one line per turn with the words said), and `conversations.tsv`, an index. The same seed builds the
same files.
"""

from __future__ import annotations

import argparse
import csv
import re
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from benchmark.dataset import Clip, load_manifest
from benchmark.longfiles import DATA

SAMPLE_RATE = 16000
OUT = Path("benchmark-results") / "conversations"
SEED = 18
# Clips longer than this are left out, so that a turn under 2 s always has room for one more clip within 15 s.
MAX_CLIP_S = 12.0
MIN_TURN_S, MAX_TURN_S = 2.0, 15.0
LONG_TURN_S = (3.0, 12.0)
SHORT_TURN_S = (2.0, 3.5)
PAUSE_S = (0.2, 1.5)
SHORT_PAUSE_S = (0.2, 0.5)
# The pause between two clips of one turn: a breath, not a change of speaker.
BREATH_S = (0.05, 0.2)
BACK_AND_FORTH_CHANCE = 0.2
BACK_AND_FORTH_TURNS = (4, 7)
LENGTH_S = (120.0, 240.0)
PEAK = 10 ** (-3 / 20)
# A clip's edges are silence while their 10-ms frames stay this far below its loudest frame.
EDGE_DB = -35.0
FRAME = SAMPLE_RATE // 100


@dataclass(frozen=True)
class Voice:
    """One person: the speaker label written in the RTTM and the manifest ids of their clips."""

    speaker: str
    ids: str
    english: bool = False
    # Digits are said in short runs: a digit speaker's turns stay short, so their few clips come back less often.
    max_turn_s: float = MAX_TURN_S


def _digits(name: str) -> Voice:
    return Voice(f"fsdd_{name}", rf"fsdd_\d_{name}_", english=True, max_turn_s=5.0)


VOICES = {
    "allison_en": Voice("allison", r"ast_en_", english=True),
    "allison": Voice("allison", r"ast_(en|es)_"),
    "carlo": Voice("carlo", r"ast_it_"),
    "ivrvoice": Voice("ivrvoice_ru", r"ast_ru_"),
    "lj": Voice("ljspeech", r"lj_", english=True),
    **{f"fsdd_{name}": _digits(name) for name in ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")},
}

# 8 with two speakers, 6 with three, 6 with four; the all-English ones get an STM of the words said.
PLANS: dict[str, tuple[str, ...]] = {
    "conv2_01": ("allison_en", "lj"),
    "conv2_02": ("lj", "allison_en"),
    "conv2_03": ("allison_en", "fsdd_george"),
    "conv2_04": ("lj", "fsdd_jackson"),
    "conv2_05": ("fsdd_lucas", "fsdd_nicolas"),
    "conv2_06": ("carlo", "ivrvoice"),
    "conv2_07": ("allison", "carlo"),
    "conv2_08": ("ivrvoice", "lj"),
    "conv3_01": ("allison_en", "lj", "fsdd_theo"),
    "conv3_02": ("carlo", "ivrvoice", "allison"),
    "conv3_03": ("lj", "fsdd_george", "fsdd_yweweler"),
    "conv3_04": ("allison", "ivrvoice", "lj"),
    "conv3_05": ("fsdd_theo", "carlo", "lj"),
    "conv3_06": ("allison", "fsdd_lucas", "ivrvoice"),
    "conv4_01": ("allison", "carlo", "ivrvoice", "lj"),
    "conv4_02": ("allison_en", "lj", "fsdd_george", "fsdd_jackson"),
    "conv4_03": ("carlo", "ivrvoice", "fsdd_nicolas", "fsdd_theo"),
    "conv4_04": ("allison", "carlo", "lj", "fsdd_yweweler"),
    "conv4_05": ("lj", "ivrvoice", "fsdd_lucas", "fsdd_george"),
    "conv4_06": ("allison", "carlo", "ivrvoice", "fsdd_jackson"),
}


@dataclass(frozen=True)
class Turn:
    """One speaker's stretch of speech, in seconds from the start of the file."""

    start: float
    end: float
    speaker: str
    text: str = ""


@dataclass
class Conversation:
    """A built file: its samples, its turns and whether every word of it has an English reference."""

    name: str
    audio: np.ndarray
    turns: list[Turn]
    english: bool

    @property
    def speakers(self) -> list[str]:
        """The speakers in order of first turn."""
        return list(dict.fromkeys(turn.speaker for turn in self.turns))

    @property
    def seconds(self) -> float:
        """The file's length in seconds."""
        return len(self.audio) / SAMPLE_RATE


@dataclass
class Pool:
    """A person's clips, dealt in a shuffled order and shuffled again once all are dealt."""

    clips: list[Clip]
    rng: np.random.Generator
    order: list[int] = field(default_factory=list)

    def take(self) -> Clip:
        """The next clip."""
        if not self.order:
            self.order = [int(index) for index in self.rng.permutation(len(self.clips))]
        return self.clips[self.order.pop()]


# --- the clips ---


def usable(clip: Clip) -> bool:
    """Speech with a reference read or written by a person, short enough for one turn."""
    quality = clip.ref_quality.split(" ")[0]
    return quality in ("exact", "script") and clip.duration is not None and clip.duration <= MAX_CLIP_S


def clips_of(voice: Voice, clips: Sequence[Clip]) -> list[Clip]:
    """The voice's usable clips, in id order."""
    mine = [clip for clip in clips if re.match(voice.ids, clip.id) and usable(clip)]
    if not mine:
        raise ValueError(f"no clips for {voice.speaker} ({voice.ids}) in the manifest")
    return sorted(mine, key=lambda clip: clip.id)


def decode(path: Path) -> np.ndarray:
    """16 kHz mono float samples, resampled by PyAV to 16-bit as faster-whisper's decode_audio does (without the
    garbage collection it forces on every call, a tenth of a second per clip)."""
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    with av.open(str(path)) as source:
        frames = [frame for packet in source.decode(audio=0) for frame in resampler.resample(packet)]
    frames += resampler.resample(None)
    pcm = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames]) if frames else np.zeros(0, np.int16)
    return (pcm / 32768.0).astype(np.float32)


@cache
def samples(path: Path) -> np.ndarray:
    """16 kHz mono samples of a clip, edges trimmed, peak at -3 dBFS."""
    audio = trim(decode(path))
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    return (audio * (PEAK / peak)).astype(np.float32) if peak > 0 else audio


def trim(audio: np.ndarray) -> np.ndarray:
    """The audio from its first to its last frame within EDGE_DB of its loudest frame."""
    frames = len(audio) // FRAME
    if frames == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: frames * FRAME].reshape(frames, FRAME) ** 2, axis=1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (EDGE_DB / 20))
    return audio[loud[0] * FRAME : (loud[-1] + 1) * FRAME]


# --- the conversation ---


def schedule(voices: Sequence[str], rng: np.random.Generator) -> Iterator[tuple[str, float, float]]:
    """(voice, turn length, pause before it), without end: long turns, now and then a quick back-and-forth."""
    turns = dict.fromkeys(voices, 0)
    previous = ""
    while True:
        if previous and rng.random() < BACK_AND_FORTH_CHANCE:
            pair = (next_voice(turns, previous, rng), previous)
            for index in range(int(rng.integers(*BACK_AND_FORTH_TURNS))):
                previous = pair[index % 2]
                turns[previous] += 1
                yield previous, float(rng.uniform(*SHORT_TURN_S)), float(rng.uniform(*SHORT_PAUSE_S))
            continue
        previous = next_voice(turns, previous, rng)
        turns[previous] += 1
        yield previous, float(rng.uniform(*LONG_TURN_S)), float(rng.uniform(*PAUSE_S))


def next_voice(turns: dict[str, int], previous: str, rng: np.random.Generator) -> str:
    """Anyone but the last speaker, favouring those who have had fewer turns."""
    others = [voice for voice in turns if voice != previous]
    weights = np.array([1.0 / (1 + turns[voice]) ** 2 for voice in others])
    return others[int(rng.choice(len(others), p=weights / weights.sum()))]


def speak(pool: Pool, length_s: float, rng: np.random.Generator) -> tuple[list[np.ndarray], str]:
    """One turn: clips of one person with breaths between them until it lasts length_s (never over 15 s)."""
    parts: list[np.ndarray] = []
    texts: list[str] = []
    total = 0
    while total < length_s * SAMPLE_RATE:
        clip = pool.take()
        audio = samples(clip.audio)
        breath = silence(float(rng.uniform(*BREATH_S))) if parts else silence(0.0)
        if total + len(breath) + len(audio) > MAX_TURN_S * SAMPLE_RATE:
            break
        parts += [breath, audio]
        texts.append(clip.reference)
        total += len(breath) + len(audio)
    return parts, " ".join(texts)


def silence(seconds: float) -> np.ndarray:
    """Digital silence."""
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def build(name: str, plan: Sequence[str], clips: Sequence[Clip], seed: int) -> Conversation:
    """One conversation of the plan's voices, the same for the same name and seed."""
    rng = np.random.default_rng([seed, *name.encode()])
    pools = {voice: Pool(clips_of(VOICES[voice], clips), rng) for voice in plan}
    length_s = float(rng.uniform(*LENGTH_S))
    parts: list[np.ndarray] = []
    turns: list[Turn] = []
    cursor = 0
    for voice, turn_s, pause_s in schedule(plan, rng):
        if cursor >= length_s * SAMPLE_RATE:
            break
        pause = silence(pause_s if turns else 0.5)
        spoken, text = speak(pools[voice], min(turn_s, VOICES[voice].max_turn_s), rng)
        start = cursor + len(pause)
        cursor = start + sum(len(part) for part in spoken)
        parts += [pause, *spoken]
        turns.append(Turn(start / SAMPLE_RATE, cursor / SAMPLE_RATE, VOICES[voice].speaker, text))
    parts.append(silence(0.5))
    english = all(VOICES[voice].english for voice in plan)
    return Conversation(name, np.concatenate(parts), turns, english)


# --- the files ---


def write(conversation: Conversation, out: Path) -> None:
    """`<name>.wav`, `<name>.rttm` and, for an English conversation, `<name>.stm`."""
    write_wav(out / f"{conversation.name}.wav", conversation.audio)
    (out / f"{conversation.name}.rttm").write_text(rttm(conversation.name, conversation.turns))
    if conversation.english:
        (out / f"{conversation.name}.stm").write_text(stm(conversation.name, conversation.turns))


def write_wav(path: Path, audio: np.ndarray) -> None:
    """16-bit PCM, 16 kHz mono."""
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as sink:
        sink.setnchannels(1)
        sink.setsampwidth(2)
        sink.setframerate(SAMPLE_RATE)
        sink.writeframes(pcm.tobytes())


def rttm(name: str, turns: Sequence[Turn]) -> str:
    """NIST RTTM: one SPEAKER line per turn."""
    return "".join(
        f"SPEAKER {name} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>\n" for t in turns
    )


def stm(name: str, turns: Sequence[Turn]) -> str:
    """NIST STM: one line per turn with the words said, as pyannote's sample in ../shared/data has them."""
    return "".join(f"{name} 1 {t.speaker} {t.start:.3f} {t.end:.3f} {t.text}\n" for t in turns)


def read_rttm(path: Path) -> dict[str, list[Turn]]:
    """Turns by file name from an RTTM of one or more files."""
    files: dict[str, list[Turn]] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            files.setdefault(fields[1], []).append(Turn(start, start + duration, fields[7]))
    return files


def read_stm(path: Path) -> list[Turn]:
    """Turns with their words from an STM of one file."""
    turns = []
    for line in path.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) >= 5 and not line.startswith(";;"):
            turns.append(Turn(float(fields[3]), float(fields[4]), fields[2], fields[5] if len(fields) > 5 else ""))
    return turns


def write_index(conversations: Sequence[Conversation], out: Path) -> None:
    """conversations.tsv: name, speakers, seconds, turns, whether an STM was written, the speakers."""
    with (out / "conversations.tsv").open("w", newline="") as handle:
        table = csv.writer(handle, delimiter="\t", lineterminator="\n")
        table.writerow(["name", "speakers", "seconds", "turns", "stm", "who"])
        for c in conversations:
            table.writerow(
                [c.name, len(c.speakers), f"{c.seconds:.3f}", len(c.turns), int(c.english), ",".join(c.speakers)]
            )


def read_index(out: Path) -> list[dict[str, str]]:
    """The rows of conversations.tsv."""
    with (out / "conversations.tsv").open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def build_all(out: Path, seed: int = SEED, names: Sequence[str] = ()) -> list[Conversation]:
    """Build the named conversations (all of them by default) into `out`, with the index."""
    clips = load_manifest(DATA / "manifest.tsv")
    out.mkdir(parents=True, exist_ok=True)
    chosen = [name for name in PLANS if not names or name in names]
    conversations = []
    for name in chosen:
        conversation = build(name, PLANS[name], clips, seed)
        write(conversation, out)
        conversations.append(conversation)
    write_index(conversations, out)
    return conversations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--only", default="", help="comma-separated conversation names (all by default)")
    args = parser.parse_args()
    names = [name for name in args.only.split(",") if name]
    for c in build_all(args.out, args.seed, names):
        shortest = min(t.end - t.start for t in c.turns)
        longest = max(t.end - t.start for t in c.turns)
        print(
            f"{c.name}: {len(c.speakers)} speakers ({', '.join(c.speakers)}), {c.seconds:.0f} s, {len(c.turns)} turns "
            f"of {shortest:.1f} to {longest:.1f} s{', words' if c.english else ''}"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
