"""One-change variants of the guided study's runs, measured on the real val/ split (how GUIDED_RECIPE was chosen).

    python benchmarks/guided_variants.py gn bn bn_l2 ...
        [--data ~/.cache/manga_colorization/realart/dataset] [--out runs/guided_try]

Each variant is `guided_config("real_hints")` (or of the run its `_base` names; the demo's budget, GUIDED_RECIPE) with
the changes below, trained resumably with `study.train_recipe` into OUT/NAME (a folder of other settings is refused),
then measured with `guided_study.guided_metrics` on DATA/val at 0, 5, 10, 20 and 50 hints (a palette model also with the
palette alone and with 10 hints). Prints one line per variant: hints -> (pooled PSNR, CIEDE2000)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from manga_colorization.experiments.guided_study import guided_config, guided_metrics
from manga_colorization.runs import Run, load_generator
from manga_colorization.experiments.study import eval_dataset, summarize, train_recipe

BN = {"gen_options": None}                      # the demo's BatchNorm (the recipe before GroupNorm)
GN = {"gen_options": {"norm": "group"}}         # GroupNorm (the second round's choice)
SPREAD = {"hint_spread": True}                  # the hints spread over the gray as input (third round)
RESIDUAL = {**SPREAD, "hint_residual": True}    # ... and as the base of the output: with GroupNorm, the recipe now
VARIANTS: dict[str, dict] = {
    "gn": GN,
    "bn": BN,
    "bn_ema995": {**BN, "ema": 0.995},
    "bn_l2": {**BN, "pixel_loss": "l2"},
    "bn_adv0": {**BN, "adv_weight": 0.0},
    "bn_lim2048": {**BN, "limit": 2048, "epochs": 5},
    "bn_hue05": {**BN, "hue_rotate": 0.5},
    "bn_hue0": {**BN, "hue_rotate": 0.0},
    "gn_m32": {**GN, "hint_mean": 32.0},
    "gn_l2": {**GN, "pixel_loss": "l2"},
    "gn_bil": {"gen_options": {**GN["gen_options"], **SPREAD}},
    "gn_bil_res": {"gen_options": {**GN["gen_options"], **RESIDUAL}},
    "gn_bil_res_adv0": {"gen_options": {**GN["gen_options"], **RESIDUAL}, "adv_weight": 0.0},
    "both_bn": {"_base": "real_guided"},           # the hints + palette run as it was (BatchNorm, no spread)
    "both_bil_res": {"_base": "real_guided", "gen_options": RESIDUAL},
    "both_bil": {"_base": "real_guided", "gen_options": SPREAD},
}
COUNTS = (0, 5, 10, 20, 50)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="+", choices=list(VARIANTS))
    p.add_argument("--data", default="~/.cache/manga_colorization/realart/dataset")
    p.add_argument("--out", default="runs/guided_try")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write {variant: {hints: [psnr_pooled, ciede2000]}} here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    real, out, results = Path(args.data).expanduser(), Path(args.out), {}
    val = eval_dataset(real / "val", 64)
    for name in args.variants:
        change = {k: v for k, v in VARIANTS[name].items() if k != "_base"}
        config = dataclasses.replace(guided_config(VARIANTS[name].get("_base", "real_hints"), out, real),
                                     out=str(out / name), **change)
        t0 = time.perf_counter()
        status = train_recipe(config)
        G = load_generator(Run(config.out).best_checkpoint, device="cpu")
        rows = {n: summarize(guided_metrics(G, val, n)) for n in COUNTS}
        if G.uses_palette:
            rows.update({f"palette+{n}": summarize(guided_metrics(G, val, n, palette=True)) for n in (0, 10)})
        results[name] = {n: [round(r["psnr_pooled"], 2), round(r["ciede2000"], 2)] for n, r in rows.items()}
        print(f"{name} ({status}, {time.perf_counter() - t0:.0f} s): {results[name]}", flush=True)
    if args.json: Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
