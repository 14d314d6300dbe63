"""Preview latency of the hint editor (issues 14 and 22): a guided run's generator on a synthetic A5-ish page, five
points added one by one, the preview re-colorized after each; median and max seconds, at the generator's working size
and at 256. With --reference, a reference-guided generator (reference or reference_hints) with a reference picture
(a synthetic character sheet): the same page and sizes, also the first preview after the reference is set (it makes the
example-based transfer, which later previews reuse) and the same previews without a reference.

OMP_NUM_THREADS=2 python benchmarks/editor_latency.py runs/guided/real_guided --json benchmarks/editor_latency.json
OMP_NUM_THREADS=2 python benchmarks/editor_latency.py --reference [RUN] --json benchmarks/editor_latency_reference.json
(no RUN: an untrained generator of the README's reference recipe, 64 px, width 16, depth 6: the same work per
preview)"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from manga_colorization.experiments.bench import machine_info
from manga_colorization.colorize import Colorizer
from manga_colorization.hint_editor import HintEditor
from manga_colorization.synthetic import synth_character, synth_page

PAGE_SIZE = (1240, 1754)
REFERENCE_RECIPE = ("mangacolor train --data synthetic --guidance reference_hints --size 64 --width 16 --depth 6 "
                    "(untrained weights: the timing does not depend on them)")


def measure(run, working_size: int | None, preview_size: int = 256, points: int = 5, reference=None) -> dict:
    "Seconds per preview refresh (after each of `points` added points) of a `HintEditor` on a synthetic page."
    page = synth_page(seed=1, index=0, size=PAGE_SIZE).gray
    editor = HintEditor(Colorizer(run, device="cpu", working_size=working_size), page, preview_size=preview_size)
    row = {"working_size": editor.colorizer.size, "preview_size": preview_size}
    if reference is not None:
        row["set_reference_s"] = _timed(lambda: editor.set_reference(reference))   # the canvas and the first preview
    times = []
    for i in range(points):
        editor.add_point(200 + 150 * i, 300 + 200 * i, (200, 60, 60))
        times.append(editor.last_preview_s)
    return {**row, "median_s": statistics.median(times), "max_s": max(times), "apply_full_page_s": _timed(editor.apply)}


def _timed(fn) -> float:
    t = time.perf_counter(); fn(); return time.perf_counter() - t


def _reference_generator(folder: Path) -> Path:
    "An untrained generator of the README's reference_hints recipe (64 px, width 16, depth 6), saved in `folder`."
    from manga_colorization.models import make_generator, save_generator
    from manga_colorization.train import TrainConfig, apply_recipe
    cfg = apply_recipe(TrainConfig(guidance="reference_hints", size=64, width=16, depth=6, pretrained=False))
    torch.manual_seed(0)
    G = make_generator("unet", width=16, depth=6, out_ch=2, guidance="reference_hints", **cfg.gen_options)
    save_generator(G, folder, {"size": 64, "input_mode": "gray", "out_ch": 2, "color_space": "lab"})
    return folder


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="a guided run folder or checkpoint (with --reference: a reference one)")
    p.add_argument("--reference", action="store_true", help="time a reference-guided generator with a reference")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    machine = {"threads": torch.get_num_threads(), "cpu": machine_info()["cpu"], "cores": os.cpu_count(),
               "load_average_1min": round(os.getloadavg()[0], 2)}
    if not a.reference:
        if not a.run: p.error("give a guided run (or --reference)")
        rows = [measure(a.run, None), measure(a.run, 256)]
        res = {"run": a.run, **machine, "page": f"synthetic {PAGE_SIZE[0]}x{PAGE_SIZE[1]}", "rows": rows}
    else:
        run = a.run or _reference_generator(Path(tempfile.mkdtemp(prefix="editor_latency_")) / "reference_hints")
        ref = synth_character(seed=0, character=0, drawing=0, size=256).color
        rows = [{"reference": True, **measure(run, ws, reference=ref)} for ws in (None, 256)]
        rows += [{"reference": False, **measure(run, ws)} for ws in (None, 256)]
        res = {"run": a.run or REFERENCE_RECIPE, **machine, "page": f"synthetic {PAGE_SIZE[0]}x{PAGE_SIZE[1]}",
               "reference": "synth_character(seed=0, character=0, drawing=0, size=256).color", "rows": rows}
    print(json.dumps(res, indent=1))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
