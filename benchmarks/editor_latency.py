"""Preview latency of the hint editor (issue 14): a guided run's generator on a synthetic A5-ish page, five points added
one by one, the preview re-colorized after each; median and max seconds, at the generator's working size and at 256.

OMP_NUM_THREADS=2 python benchmarks/editor_latency.py runs/guided/real_guided --json benchmarks/editor_latency.json"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from manga_colorization.colorize import Colorizer
from manga_colorization.hint_editor import HintEditor
from manga_colorization.synthetic import synth_page


def measure(run: str, working_size: int | None, preview_size: int = 256, points: int = 5) -> dict:
    "Seconds per preview refresh (after each of `points` added points) of a `HintEditor` on a synthetic page."
    page = synth_page(seed=1, index=0, size=(1240, 1754)).gray
    editor = HintEditor(Colorizer(run, device="cpu", working_size=working_size), page, preview_size=preview_size)
    times = []
    for i in range(points):
        editor.add_point(200 + 150 * i, 300 + 200 * i, (200, 60, 60))
        times.append(editor.last_preview_s)
    return {"working_size": editor.colorizer.size, "preview_size": preview_size, "median_s": statistics.median(times),
            "max_s": max(times),
            "apply_full_page_s": _timed(editor.apply)}


def _timed(fn) -> float:
    t = time.perf_counter(); fn(); return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a guided run folder or checkpoint")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    res = {"run": a.run, "threads": torch.get_num_threads(), "page": "synthetic 1240x1754",
           "rows": [measure(a.run, None), measure(a.run, 256)]}
    print(json.dumps(res, indent=1))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
