"""What matching a large page on shrunk pictures costs (issue 22, page time): a siamese reference model matches a page
whose finest correspondence level would hold more than `G.attention_cells` cells (4,096) on the page and its reference
shrunk 2x (4x, ...), each level's result brought back to its grid (`models._shrink_factor`). Measured where it acts:
held-out real colour pictures of (a) (`test/`, gray ones apart) at 512 px, each with its augmented self from a fixed
seeded warp, as `mangacolor reference-study` makes them at 64 px; a seeded draw of `--n` of them.

Rows: copy-the-gray, the example-based transfer (4,000 samples, as the study's row), the model without a reference,
the model matching at full size (`attention_cells = None`, 16,384 cells at 1/4) and shrunk (the default); CIEDE2000
and pooled PSNR over the pictures, and seconds per picture (the model's transfer recomputed each time).

OMP_NUM_THREADS=1 python benchmarks/reference_shrink.py [--model RUN] --json benchmarks/reference_shrink.json
(RUN: a siamese reference run or checkpoint; default: the shipped `reference_hints` model)"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from manga_colorization.core import rgb_to_gray
from manga_colorization.experiments.bench import machine_info
from manga_colorization.experiments.reference_study import _metrics, colour_targets
from manga_colorization.guidance import augmented_reference, transfer_colors
from manga_colorization.models import ATTENTION_CELLS
from manga_colorization.runs import load_generator, shipped_path

REAL = Path("~/.cache/manga_colorization/realart/dataset/colour").expanduser()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a siamese reference run or checkpoint (default: the shipped model)")
    p.add_argument("--real", default=str(REAL), help="the colour real-art root (realart --set colour)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--n", type=int, default=40, help="pictures drawn from (a)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--precision", default="auto", help="auto | fp32 | bf16, as a page is colorized (default auto)")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    t0 = time.time()
    targets = colour_targets(Path(a.real) / "test", a.size)
    targets = targets[torch.randperm(len(targets), generator=torch.Generator().manual_seed(a.seed))[:a.n]]
    refs = augmented_reference(targets, torch.Generator().manual_seed(a.seed))
    LG = load_generator(a.model or shipped_path("reference_hints"), device="cpu", precision=a.precision)
    G, gray = LG.runner.G, rgb_to_gray(targets)

    def model(cells):
        def run(g, r):
            G.attention_cells = cells
            G.__dict__.pop("_transfer_memo", None)          # each picture's transfer made anew, as on a new page
            return LG.predict_rgb(g, reference=r)
        return run
    rows = {"copy-the-gray": lambda g, r: g.expand(-1, 3, -1, -1),
            "transfer_colors": lambda g, r: transfer_colors(g, r, samples=4000, remap=False),
            "reference model, no reference": lambda g, r: LG.predict_rgb(g),
            "reference model, matched at full size": model(None),
            f"reference model, matched shrunk (attention_cells {ATTENTION_CELLS})": model(ATTENTION_CELLS)}
    outs, secs = {k: [] for k in rows}, {k: 0.0 for k in rows}
    for i in range(len(targets)):
        for name, fn in rows.items():
            t = time.perf_counter()
            with torch.no_grad(): outs[name].append(fn(gray[i:i + 1], refs[i:i + 1]))
            secs[name] += time.perf_counter() - t
    res = {"size": a.size, "pictures": len(targets), "seed": a.seed, "real": a.real, "precision": LG.runner.precision,
           "model": str(a.model or "shipped reference_hints"), "rows": {}}
    for name in rows:
        res["rows"][name] = {**_metrics(torch.cat(outs[name]), targets, gray, None),
                             "s_per_picture": round(secs[name] / len(targets), 3)}
    full, shrunk = (res["rows"][k]["ciede2000"] for k in list(rows)[-2:])
    res["shrunk_vs_full_ciede2000"] = round(shrunk / full, 4)
    res.update(cpu=machine_info()["cpu"], threads=torch.get_num_threads(), wall_time_s=round(time.time() - t0, 1))
    print(json.dumps(res, indent=1))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
