"""Who spoke when: speaker turns from voice embeddings, clustered over the whole recording, with overlaps.

Speech is found with Silero VAD (faster-whisper's); each stretch of speech is cut into 1.6-s windows a fixed step
apart, and each window becomes a 256-number voice embedding from Resemblyzer's encoder (a 3-layer LSTM whose
trained weights ship in the `resemblyzer` wheel, so it works offline). Windows are clustered by cosine distance:
average-linkage agglomerative clustering, cut at a distance tuned on real conversations, says whether more than one
person speaks; an eigengap (NME-SC) may raise the count where spectral clusters come out well apart; spectral
clustering meets a count the task gives. Each moment of speech takes the label of the nearest window in its stretch.

Where more than one speaker is found, pyannote's segmentation network (worker.segmentation) then adds what the VAD
and one label at a time miss: speech it hears that the VAD did not find takes the nearest turn's speaker, and where
it hears two people at once, the speaker nearest in time who is not the one already speaking gets a turn there too
(overlap-aware labelling, as in Otterson and Ostendorf, 2007). On the AMI excerpts these two took DER from 29.7 to
23.2 %.

Audio comes in pieces (a whole short file, or a long file's chunks, read one at a time), so memory holds one piece
and the embeddings, never the whole waveform; labels are clustered over every piece together, so a speaker keeps
one label across a long file.
"""

from __future__ import annotations

import bisect
import importlib.util
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.segmentation import Segmenter, regions

log = logging.getLogger(__name__)

RATE = 16000
HOP = RATE // 100  # one mel frame: 10 ms
WINDOW_FRAMES = 160  # Resemblyzer's partial utterance: 1.6 s
STEP_FRAMES = 40  # a window every 0.4 s
VAD_THRESHOLD = 0.3  # far-field meeting speech scores low; lower finds it without taking noise for speech
LOUDEST_GAIN = 50.0  # quiet recordings are raised to full scale for the VAD, by at most this factor
LEVEL_DBFS = -30.0  # each stretch of speech is brought to this loudness before it is embedded, as in training
SHORTEST_S = 0.4  # speech shorter than this gets no window of its own: it takes its neighbours' label
BATCH = 128
# Cosine distance at which average linkage stops merging; the count of speakers follows from it.
THRESHOLD = 0.3
# A cluster with less speech than this (seconds), or than this share of all speech, is folded into the nearest
# larger one: a cough or a shift in one voice's tone, not a speaker.
SMALLEST_SPEAKER_S = 1.0
SMALLEST_SPEAKER_SHARE = 0.1
# Clustering is quadratic in windows: past this many, a spread sample is clustered and the rest join its centroids.
MOST_CLUSTERED = 2000
# The eigengap's count (NME-SC): at most this many speakers unless max_speakers says otherwise; eigenvalues are cubic
# in windows, so it reads a spread sample of at most MOST_COUNTED (500 windows: 200 s of speech, about 1 s of CPU).
MOST_SPEAKERS = 8
MOST_COUNTED = 500
# Neighbours kept per window, tried from 2 to this share of the windows, this many values (NME-SC's own settings).
NEIGHBOURS_SHARE = 0.25
NEIGHBOURS_TRIED = 30
# A count above the tree's stands only if no two of its clusters are closer than this (average cosine distance
# between their windows): below it, measured splits were one voice in two (Allison Smith's English and Spanish
# prompts, 0.31 to 0.32; a digit-dataset speaker, 0.26), above it different people (0.41 and up).
APART = 0.38
# The segmentation network's frames: speech above HEARD the VAD missed gets a turn when at least SHORTEST_HEARD_S
# long; two speakers at once above OVERLAP, runs closer than OVERLAP_GAP_S joined, at least SHORTEST_OVERLAP_S long.
# Tuned on the AMI excerpts (0.3 to 0.6 and 0.2 to 0.5 s tried: 22.2 to 23.1 % DER), so their figure is optimistic.
HEARD = 0.5
SHORTEST_HEARD_S = 0.2
OVERLAP = 0.3
OVERLAP_GAP_S = 0.1
SHORTEST_OVERLAP_S = 0.1


@dataclass(frozen=True)
class Turn:
    """One speaker's stretch of speech, in seconds on the recording's timeline."""

    start: float
    end: float
    speaker: str


@dataclass(frozen=True)
class Piece:
    """Samples of the recording (16 kHz float32 mono) and where they start on its timeline."""

    offset: float
    samples: np.ndarray


@dataclass
class _Windows:
    """Embeddings of speech windows and where each sits: its stretch of speech and its centre time."""

    embeddings: list[np.ndarray]
    centres: list[float]
    stretches: list[tuple[float, float]]  # every stretch of speech found, in time order
    owner: list[int]  # for each window, its stretch's index


def weights_path() -> Path:
    """Resemblyzer's trained encoder, inside its installed package (read without importing it: the package's
    own audio helpers import webrtcvad, which needs pkg_resources)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("speaker labels need the `resemblyzer` package (pip install 'whisperq[speakers]')")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


class Diarizer:
    """The voice encoder, loaded once per worker."""

    def __init__(self, device: str = "cpu", cpu_threads: int = 0) -> None:
        """On `device`; on CPU, torch's threads set to `cpu_threads` where given (0: torch's own choice, every
        core). It is the process's one setting: a worker gives its copy's share of the cores, so the stage beside a
        replica's decode does not oversubscribe them; past the cores, torch's threads wait on each other at every
        step whenever anything else runs (a status poll every 50 ms took the 16-minute file's stage from 4 to 13 s).
        """
        import torch

        if cpu_threads and device == "cpu":
            torch.set_num_threads(cpu_threads)
        self.device = device
        self.encoder = _encoder(torch, device)
        self.filters = mel_filters()
        self.segmenter = Segmenter(device)

    def turns(
        self,
        audio: np.ndarray,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
    ) -> list[Turn]:
        """Speaker turns of one waveform."""
        return self.turns_of(lambda: [Piece(0.0, audio)], num_speakers, min_speakers, max_speakers)

    def turns_of(
        self,
        read: Callable[[], Iterable[Piece]],
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
    ) -> list[Turn]:
        """Speaker turns over pieces of one recording, labelled SPEAKER_00, SPEAKER_01... by first appearance.
        `read` gives the pieces; it is called a second time, for the segmentation network, only where more than one
        speaker is found: with one voice, overlaps are none, and speech the VAD missed would only take that voice,
        as the words there do anyway (the network is a third of the stage's time on a one-voice file)."""
        found = _Windows([], [], [], [])
        for piece in read():
            self._embed_piece(piece, found)
        if found.embeddings:
            labels = cluster(np.stack(found.embeddings), num_speakers, min_speakers, max_speakers, STEP_FRAMES / 100)
            turns = _turns(found, labels)
        else:  # no speech long enough to embed: one speaker
            turns = [Turn(a, b, "0") for a, b in found.stretches]
        if len({turn.speaker for turn in turns}) == 1:
            return _named(turns)
        heard, overlaps = self._heard(read())
        return _named(overlapped(filled(turns, heard), overlaps))

    def _heard(self, pieces: Iterable[Piece]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Speech and overlaps on the recording's timeline, by the segmentation network."""
        heard: list[tuple[float, float]] = []
        overlaps: list[tuple[float, float]] = []
        for piece in pieces:
            activity = self.segmenter.activity(piece.samples)
            heard.extend(regions(activity.speech > HEARD, piece.offset))
            runs = _joined(regions(activity.overlap > OVERLAP, piece.offset), OVERLAP_GAP_S)
            overlaps.extend((start, end) for start, end in runs if end - start >= SHORTEST_OVERLAP_S)
        return heard, overlaps

    def _embed_piece(self, piece: Piece, found: _Windows) -> None:
        """The windows over every stretch of speech in the piece, embedded together (a batch of windows from
        several stretches costs the encoder little more than one stretch's few)."""
        mels: list[np.ndarray] = []
        for start, end in speech(_raised(piece.samples)):
            stretch = len(found.stretches)
            found.stretches.append((piece.offset + start, piece.offset + end))
            if end - start < SHORTEST_S:
                continue
            centres, windows = _windows(_levelled(piece.samples[round(start * RATE) : round(end * RATE)]), self.filters)
            mels.append(windows)
            found.centres.extend(piece.offset + start + centre for centre in centres)
            found.owner.extend([stretch] * len(centres))
        if mels:
            found.embeddings.extend(self._encoded(np.concatenate(mels)))

    def _encoded(self, windows: np.ndarray) -> np.ndarray:
        """The embeddings of mel windows (windows x frames x bands), BATCH at a time."""
        import torch

        outputs = []
        with torch.inference_mode():
            for first in range(0, len(windows), BATCH):
                part = torch.from_numpy(windows[first : first + BATCH]).to(self.device)
                outputs.append(self.encoder(part).cpu().numpy())
        return np.concatenate(outputs)


def _joined(runs: list[tuple[float, float]], gap: float) -> list[tuple[float, float]]:
    joined: list[tuple[float, float]] = []
    for start, end in runs:
        if joined and start - joined[-1][1] <= gap:
            joined[-1] = (joined[-1][0], end)
        else:
            joined.append((start, end))
    return joined


def _windows(samples: np.ndarray, filters: Any) -> tuple[list[float], np.ndarray]:
    """Centre times (s, from the samples' start) and mel frames of the windows over one stretch of speech."""
    mel = mel_frames(samples, filters)
    frames = len(mel)
    starts = list(range(0, max(1, frames - WINDOW_FRAMES + 1), STEP_FRAMES))
    if frames > WINDOW_FRAMES and starts[-1] + WINDOW_FRAMES < frames:
        starts.append(frames - WINDOW_FRAMES)  # the stretch's end gets a window too
    if frames < WINDOW_FRAMES:
        mel = np.pad(mel, ((0, WINDOW_FRAMES - frames), (0, 0)))
    centres = [(s + min(WINDOW_FRAMES, frames) / 2) / 100 for s in starts]
    return centres, np.stack([mel[s : s + WINDOW_FRAMES] for s in starts])


def _raised(samples: np.ndarray) -> np.ndarray:
    peak = float(np.abs(samples).max()) if len(samples) else 0.0
    return samples * min(0.9 / peak, LOUDEST_GAIN) if peak > 0 else samples


def _levelled(samples: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
    return (samples * (10 ** (LEVEL_DBFS / 20) / rms)).astype(np.float32) if rms > 0 else samples


def _encoder(torch: Any, device: str) -> Any:
    """Resemblyzer's network (LSTM 40 -> 3 x 256, a linear layer, ReLU, unit length) with its trained weights."""

    class Encoder(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)
            self.linear = torch.nn.Linear(256, 256)

        def forward(self, mels: Any) -> Any:
            _, (hidden, _) = self.lstm(mels)
            raw = torch.relu(self.linear(hidden[-1]))
            return raw / torch.norm(raw, dim=1, keepdim=True).clamp_min(1e-8)

    encoder = Encoder()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)["model_state"]
    encoder.load_state_dict({k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))})
    return encoder.to(device).eval()


def mel_frames(samples: np.ndarray, filters: Any) -> np.ndarray:
    """The 40-band mel power spectrogram Resemblyzer was trained on (librosa's, computed with torch): 25-ms windows
    every 10 ms, frames x bands."""
    import torch

    spectrum = torch.stft(
        torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)),
        n_fft=400,
        hop_length=HOP,
        window=torch.hann_window(400),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return np.asarray((filters @ spectrum.abs() ** 2).T.numpy(), dtype=np.float32)


def mel_filters() -> Any:
    """librosa's 40-band Slaney mel filter bank for 400-point FFTs at 16 kHz (`librosa.filters.mel`'s defaults), as a
    torch matrix: triangles between neighbouring mel points from 0 Hz to Nyquist, each scaled to unit area. Built
    here rather than imported: librosa brings numba and llvmlite with it, 60 MiB of a worker's memory for one matrix.
    """
    import torch

    bands, size = 40, 400
    frequencies = np.fft.rfftfreq(size, 1 / RATE)
    points = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(RATE / 2), bands + 2))
    widths = np.diff(points)
    ramps = np.subtract.outer(points, frequencies)
    rising = -ramps[:bands] / widths[:bands, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (points[2:] - points[:bands]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


# Slaney's mel scale: linear below 1 kHz (200/3 Hz a mel), logarithmic above (a factor of 6.4 every 27 mels).
_HZ_PER_MEL = 200.0 / 3
_LOG_FROM_HZ = 1000.0
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    if hz < _LOG_FROM_HZ:
        return hz / _HZ_PER_MEL
    return float(_LOG_FROM_HZ / _HZ_PER_MEL + np.log(hz / _LOG_FROM_HZ) / _LOG_STEP)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    linear = mels * _HZ_PER_MEL
    logarithmic = _LOG_FROM_HZ * np.exp(_LOG_STEP * (mels - _LOG_FROM_HZ / _HZ_PER_MEL))
    return np.asarray(np.where(mels >= _LOG_FROM_HZ / _HZ_PER_MEL, logarithmic, linear))


def speech(samples: np.ndarray) -> list[tuple[float, float]]:
    """Stretches of speech in seconds, by Silero VAD, split at pauses of a fifth of a second."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        threshold=VAD_THRESHOLD, min_silence_duration_ms=200, speech_pad_ms=60, min_speech_duration_ms=100
    )
    return [(s["start"] / RATE, s["end"] / RATE) for s in get_speech_timestamps(samples, options)]


def cluster(
    embeddings: np.ndarray,
    num_speakers: int | None,
    min_speakers: int | None,
    max_speakers: int | None,
    seconds_each: float,
) -> np.ndarray:
    """A speaker index for each embedding. The count found alone (`_found`), or a count given (or a found count
    outside the bounds given), which spectral clustering meets: it measured better than cutting the tree at a
    count. Past MOST_CLUSTERED windows, a spread sample is clustered and the rest join its centroids."""
    count = len(embeddings)
    chosen = embeddings[_spread(count, MOST_CLUSTERED)]
    wanted = num_speakers
    if wanted is None:
        if len(chosen) < 2:
            return np.zeros(count, dtype=int)
        labels = _found(chosen, max_speakers, seconds_each)
        found = len(set(labels))
        wanted = (
            max(found, min_speakers or 1) if max_speakers is None else min(max(found, min_speakers or 1), max_speakers)
        )
        if wanted == found:
            return _spread_to_all(embeddings, chosen, labels)
    if wanted <= 1 or len(chosen) <= wanted:
        return np.zeros(count, dtype=int) if wanted <= 1 else np.arange(count) % wanted
    return _spread_to_all(embeddings, chosen, _spectral(chosen, wanted))


def _spread(count: int, most: int) -> np.ndarray:
    """Indices of at most `most` of `count` items, evenly spread from first to last."""
    return np.linspace(0, count - 1, min(count, most)).round().astype(int)


def _spread_to_all(embeddings: np.ndarray, chosen: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The labels of the clustered sample, or, where it was a sample, every window's nearest of its centroids."""
    return labels if len(chosen) == len(embeddings) else _nearest(embeddings, _centroids(chosen, labels))


def _found(embeddings: np.ndarray, max_speakers: int | None, seconds_each: float) -> np.ndarray:
    """Speakers found without a count. Average linkage (`_linked`) says whether more than one person speaks, and
    its count stands unless the eigengap proposes more: then the largest count between the two whose spectral
    clusters are all at least APART, with a second of speech each, wins. The tree alone folds a fourth speaker
    with a small share into a neighbour; the eigengap alone splits one voice, and is unsure between one and two."""
    linked = _linked(embeddings, seconds_each)
    found = len(set(linked))
    if found < 2:
        return linked
    for count in range(min(_eigengap_count(embeddings, max_speakers or MOST_SPEAKERS), len(embeddings) - 1), found, -1):
        labels = _spectral(embeddings, count)
        if _closest(embeddings, labels) >= APART and np.bincount(labels).min() >= SMALLEST_SPEAKER_S / seconds_each:
            return labels
    return linked


def _linked(embeddings: np.ndarray, seconds_each: float) -> np.ndarray:
    """Average-linkage clusters by cosine distance cut where merging passes THRESHOLD, tiny ones folded in, then
    every window moved to its nearest speaker's centroid."""
    from scipy.cluster.hierarchy import fcluster, linkage

    labels = fcluster(linkage(embeddings, method="average", metric="cosine"), THRESHOLD, criterion="distance")
    fewest = max(SMALLEST_SPEAKER_S / seconds_each, SMALLEST_SPEAKER_SHARE * len(embeddings))
    return _nearest(embeddings, _centroids(embeddings, _folded(embeddings, labels, fewest)))


def _eigengap_count(embeddings: np.ndarray, most: int) -> int:
    """The count by NME-SC (Park et al., 2019): each window's p nearest neighbours by cosine kept (binary,
    symmetrised); the count is where the Laplacian's eigenvalues jump most (within `most`), at the p that makes that
    jump largest for the fewest neighbours (the least p / normalised gap). Over a spread sample of MOST_COUNTED."""
    sample = embeddings[_spread(len(embeddings), MOST_COUNTED)].astype(np.float64)
    size = len(sample)
    most = min(most, size - 2)
    if most < 2:
        return 1
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # comes with scikit-learn

    order = np.argsort(-(sample @ sample.T), axis=1)
    tried = np.linspace(2, max(2, int(NEIGHBOURS_SHARE * size)), NEIGHBOURS_TRIED).round().astype(int)
    best = (np.inf, 1)
    with threadpool_limits(1):  # matrices this small: threads only contend (10x slower on a busy 2-core VM)
        for neighbours in sorted(set(tried)):
            eigenvalues = _laplacian_eigenvalues(order, neighbours)
            gaps = np.diff(eigenvalues[: most + 1])
            ratio = neighbours / (gaps.max() / eigenvalues[-1] + 1e-10)
            best = min(best, (ratio, int(np.argmax(gaps)) + 1))
    return best[1]


def _laplacian_eigenvalues(order: np.ndarray, neighbours: int) -> np.ndarray:
    """Ascending eigenvalues of the Laplacian of the graph that links each row to its first `neighbours` in
    `order` (itself included), symmetrised."""
    size = len(order)
    affinity = np.zeros((size, size))
    affinity[np.repeat(np.arange(size), neighbours), order[:, :neighbours].ravel()] = 1.0
    affinity = (affinity + affinity.T) / 2
    np.fill_diagonal(affinity, 0.0)
    return np.asarray(np.linalg.eigvalsh(np.diag(affinity.sum(axis=1)) - affinity))


def _closest(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """The smallest average cosine distance between the windows of two clusters."""
    groups = [embeddings[labels == label] for label in sorted(set(labels))]
    return min(
        float(1 - (first @ second.T).mean()) for index, first in enumerate(groups) for second in groups[index + 1 :]
    )


def _spectral(embeddings: np.ndarray, speakers: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    affinity = np.clip(embeddings @ embeddings.T, 0, 1)
    clustering = SpectralClustering(speakers, affinity="precomputed", random_state=0, assign_labels="kmeans")
    return np.asarray(clustering.fit_predict(affinity))


def _nearest(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.asarray(np.argmax(embeddings @ centroids.T, axis=1))


def _centroids(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    rows = [embeddings[labels == label].mean(axis=0) for label in sorted(set(labels))]
    centroids = np.stack(rows)
    return np.asarray(centroids / np.linalg.norm(centroids, axis=1, keepdims=True))


def _folded(embeddings: np.ndarray, labels: np.ndarray, fewest: float) -> np.ndarray:
    """Clusters with fewer than `fewest` windows joined to the nearest cluster that has enough (if any has)."""
    sizes = {label: int((labels == label).sum()) for label in set(labels)}
    kept = [label for label, size in sizes.items() if size >= fewest]
    if not kept or len(kept) == len(sizes):
        return labels
    centroids = np.stack([embeddings[labels == label].mean(axis=0) for label in kept])
    nearest = np.asarray(kept)[np.argmax(embeddings @ centroids.T, axis=1)]
    return np.where(np.isin(labels, kept), labels, nearest)


def _turns(found: _Windows, labels: np.ndarray) -> list[Turn]:
    """Each stretch of speech cut where the label of its nearest window changes; stretches without a window of
    their own take the nearest window's label."""
    centres = np.asarray(found.centres)
    owner = np.asarray(found.owner)
    turns: list[Turn] = []
    for index, (start, end) in enumerate(found.stretches):
        inside = np.flatnonzero(owner == index)
        if len(inside) == 0:
            nearest = int(np.argmin(np.abs(centres - (start + end) / 2)))
            turns.append(Turn(start, end, str(labels[nearest])))
            continue
        cut = start
        for here, there in zip(inside[:-1], inside[1:], strict=True):
            if labels[here] != labels[there]:
                middle = (centres[here] + centres[there]) / 2
                turns.append(Turn(cut, middle, str(labels[here])))
                cut = middle
        turns.append(Turn(cut, end, str(labels[inside[-1]])))
    return _merged(turns)


def filled(turns: list[Turn], heard: list[tuple[float, float]]) -> list[Turn]:
    """The turns (in time order, none overlapping), and speech heard outside them, SHORTEST_HEARD_S or longer, given
    the speaker of the nearest turn (one speaker, where there are no turns)."""
    starts = [turn.start for turn in turns]
    added = []
    for start, end in _outside(heard, turns):
        if end - start >= SHORTEST_HEARD_S:
            nearest = _nearest_turn(turns, starts, (start + end) / 2)
            added.append(Turn(start, end, "0" if nearest is None else turns[nearest].speaker))
    return sorted(turns + added, key=lambda turn: turn.start)


def overlapped(turns: list[Turn], overlaps: list[tuple[float, float]]) -> list[Turn]:
    """The turns (in time order, none overlapping), and a turn for a second speaker over each overlap: whoever,
    other than the one speaking there, has the nearest turn in time."""
    starts = [turn.start for turn in turns]
    added = []
    for start, end in overlaps:
        middle = (start + end) / 2
        here = bisect.bisect_right(starts, middle) - 1
        if here < 0 or turns[here].end < middle:
            continue
        other = _nearest_turn(turns, starts, middle, unlike=turns[here].speaker)
        if other is not None:
            added.append(Turn(start, end, turns[other].speaker))
    return sorted(turns + added, key=lambda turn: turn.start)


def _nearest_turn(turns: list[Turn], starts: list[float], moment: float, unlike: str | None = None) -> int | None:
    """The index of the turn nearest the moment, of any speaker but `unlike`: the first such on each side."""
    here = bisect.bisect_right(starts, moment) - 1
    before = next((i for i in range(here, -1, -1) if turns[i].speaker != unlike), None)
    after = next((i for i in range(here + 1, len(turns)) if turns[i].speaker != unlike), None)
    if before is None or after is None:
        return after if before is None else before
    return before if moment - turns[before].end <= turns[after].start - moment else after


def _outside(spans: list[tuple[float, float]], turns: list[Turn]) -> list[tuple[float, float]]:
    """The parts of the spans that no turn (in time order, none overlapping) covers."""
    ends = [turn.end for turn in turns]
    left: list[tuple[float, float]] = []
    for start, end in spans:
        index = bisect.bisect_right(ends, start)
        while index < len(turns) and turns[index].start < end:
            if turns[index].start > start:
                left.append((start, turns[index].start))
            start = max(start, turns[index].end)
            index += 1
        if end > start:
            left.append((start, end))
    return left


def _merged(turns: list[Turn]) -> list[Turn]:
    """Neighbouring turns of one speaker joined, when no more than half a second apart."""
    merged: list[Turn] = []
    for turn in turns:
        if merged and merged[-1].speaker == turn.speaker and turn.start - merged[-1].end <= 0.5:
            merged[-1] = Turn(merged[-1].start, turn.end, turn.speaker)
        else:
            merged.append(turn)
    return merged


def _named(turns: list[Turn]) -> list[Turn]:
    """Labels SPEAKER_00, SPEAKER_01... in order of first appearance; times rounded to milliseconds."""
    names: dict[str, str] = {}
    for turn in turns:
        names.setdefault(turn.speaker, f"SPEAKER_{len(names):02d}")
    return [Turn(round(float(t.start), 3), round(float(t.end), 3), names[t.speaker]) for t in turns]
