"""End-to-end time through a running service for a few files: submit, poll until done, median of runs.

python -m benchmark.e2e --url http://127.0.0.1:8000 --model base --runs 5 FILE [FILE ...]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmark.dataset import Clip
from benchmark.runners import ApiRunner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="base")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print("| file | audio s | runs | end-to-end s (median) | processing s (median) | real-time factor (median) |")
    print("|---|---|---|---|---|---|")
    with ApiRunner(args.url, args.model) as runner:
        for path in args.files:
            outcomes = [runner.run(Clip(id=path.stem, audio=path, reference="")) for _ in range(args.runs)]
            failed = [o.error for o in outcomes if o.error]
            if failed:
                raise SystemExit(f"{path.name}: {failed[0]}")
            wall = statistics.median(o.latency_s for o in outcomes)
            processing = statistics.median(o.processing_s for o in outcomes)
            rtf = statistics.median(o.processing_s / o.audio_s for o in outcomes)
            print(
                f"| {path.name} | {outcomes[0].audio_s:.1f} | {args.runs} | {wall:.2f} | {processing:.2f} | {rtf:.3f} |"
            )


if __name__ == "__main__":
    main()
