"""The speaker count found alone, on made-up voice embeddings (no audio, no encoder): what average linkage and the
eigengap each get wrong, and that their combination gets right. Real recordings are in test_speakers.py."""

from __future__ import annotations

import numpy as np

from worker.diarization import APART, _closest, _eigengap_count, _linked, _spectral, cluster

STEP_S = 0.4  # seconds between windows, as the Diarizer embeds them


def cloud(centre: np.ndarray, windows: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-length, non-negative embeddings scattered around a voice (as Resemblyzer's are, after its ReLU)."""
    noisy = np.maximum(centre + 0.6 * rng.normal(size=(windows, len(centre))), 0)
    return np.asarray(noisy / np.linalg.norm(noisy, axis=1, keepdims=True))


def voices(*windows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of different people, `windows` each, and who each one is: about 0.42 apart (average cosine
    distance between two people's windows), 0.2 within one person."""
    rng = np.random.default_rng(seed)
    clouds = [cloud(np.abs(rng.normal(size=256)), count, rng) for count in windows]
    return np.concatenate(clouds).astype(np.float32), np.repeat(np.arange(len(windows)), windows)


def found(embeddings: np.ndarray, **bounds: int) -> np.ndarray:
    return cluster(embeddings, bounds.get("num"), bounds.get("least"), bounds.get("most"), STEP_S)


def test_a_fourth_person_with_a_small_share_is_counted() -> None:
    """The tree folds a person with under a tenth of the speech into a neighbour; the eigengap finds them."""
    embeddings, truth = voices(140, 105, 80, 25)
    assert len(set(_linked(embeddings, STEP_S))) == 3
    labels = found(embeddings)
    assert len(set(labels)) == 4
    assert all(len(set(labels[truth == person])) == 1 for person in range(4)), "each person is one speaker"


def test_one_voice_in_two_close_halves_stays_one_speaker() -> None:
    """The eigengap splits a voice whose windows fall in two groups under APART apart (one person recorded twice);
    the tree's count stands."""
    rng = np.random.default_rng(0)
    other, voice, shift = (np.abs(rng.normal(size=256)) for _ in range(3))
    embeddings = np.concatenate(
        [cloud(other, 150, rng), cloud(voice, 100, rng), cloud((voice + shift) / 2, 100, rng)]
    ).astype(np.float32)
    assert _eigengap_count(embeddings, 8) == 3
    assert _closest(embeddings, _spectral(embeddings, 3)) < APART
    assert len(set(found(embeddings))) == 2


def test_one_voice_is_one_speaker_without_asking_the_eigengap() -> None:
    embeddings, _ = voices(300)
    assert set(found(embeddings)) == {0}


def test_counts_and_bounds_given_are_honoured() -> None:
    embeddings, _ = voices(140, 105, 80, 25)
    assert len(set(found(embeddings, num=2))) == 2
    assert len(set(found(embeddings, most=3))) == 3
    assert len(set(found(embeddings, least=5))) == 5
    assert _eigengap_count(embeddings, 3) <= 3
