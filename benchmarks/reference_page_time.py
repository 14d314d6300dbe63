"""Page time with a reference (issue 22, Targets): 1654x2339 pages (A4 at 200 dpi) of a synthetic chapter colorized at
working size 512 by a reference-guided generator, each without guidance and with a colour reference (the chapter's
first page), timed alternately in one process; the target is at most 2x the unguided time. Every timed page is a new
page, as in a chapter: the model keeps the example-based transfer of the last (page, reference) pair for an editor's
previews, and timing the same page again would reuse it (`--same-page` measures that case, the editor's).
`--exact-attention` matches the page and reference at full size (`attention_cells = None`) rather than shrunk.

OMP_NUM_THREADS=1 python benchmarks/reference_page_time.py [RUN] --json benchmarks/reference_page_time.json
(RUN: a reference run folder or checkpoint; default: the shipped reference + hints model)"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from manga_colorization.colorize import Colorizer
from manga_colorization.core import resolve_precision
from manga_colorization.experiments.bench import machine_info
from manga_colorization.synthetic import synth_chapter


def measure(run: str | None, size: tuple = (1654, 2339), working_size: int = 512, repeat: int = 3,
            precision: str = "auto", same_page: bool = False, exact_attention: bool = False) -> dict:
    "Median seconds per page without and with the reference, and their ratio."
    pages = synth_chapter(seed=3, character=1, pages=2 + repeat, size=size)
    reference, grays = pages[0].color, [p.gray for p in pages[1:]]
    if same_page: grays = [grays[0]] * len(grays)
    col = (Colorizer.shipped(device="cpu", working_size=working_size, precision=precision) if run is None else
           Colorizer(run, device="cpu", working_size=working_size, precision=precision))
    G = getattr(col.G.runner, "G", None)                  # the module (none for ONNX Runtime)
    if exact_attention and G is not None: G.attention_cells = None
    col.colorize(grays[0]); col.colorize(grays[0], reference=reference)            # warm-up
    times = {"unguided_s": [], "reference_s": []}
    for gray in grays[1:]:
        for key, kw in (("unguided_s", {}), ("reference_s", {"reference": reference})):
            t = time.perf_counter(); col.colorize(gray, **kw); times[key].append(time.perf_counter() - t)
    med = {k: round(statistics.median(v), 3) for k, v in times.items()}
    return {"page": list(size), "pages": "the same page again" if same_page else "a new page each time",
            "working_size": working_size, "model": run or "shipped reference_hints",
            "attention_cells": getattr(G, "attention_cells", None),
            **med, "ratio": round(med["reference_s"] / med["unguided_s"], 3), "target_ratio": 2.0,
            "repeat": repeat, "precision": resolve_precision(precision, torch.device("cpu")),
            "cpu": machine_info()["cpu"],
            "bf16_units": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), "threads": torch.get_num_threads()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="a reference run folder or checkpoint (default: the shipped model)")
    p.add_argument("--working-size", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--precision", default="auto")
    p.add_argument("--same-page", action="store_true",
                   help="time one page again (the transfer reused, as in an editor)")
    p.add_argument("--exact-attention", action="store_true",
                   help="match at full size (attention_cells None), not on shrunk pictures")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    res = measure(a.run, working_size=a.working_size, repeat=a.repeat, precision=a.precision, same_page=a.same_page,
                  exact_attention=a.exact_attention)
    print(json.dumps(res, indent=1))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
