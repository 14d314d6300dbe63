"""Why the synthetic-data upscaler recipe lost to Lanczos on real art, and the check that it no longer does (issue 23).

    python benchmarks/superres_synthetic.py train NAME [sr-train options ...]   # a run under runs/srsyn/NAME
    python benchmarks/superres_synthetic.py eval NAME [NAME ...]                # its figures into the JSON

`train` is `mangacolor sr-train --data synthetic` at the issue's small budget (`--size 64 --epochs 6 --limit 2048`)
with the options given; only the procedural pages are made once and kept on disk (the same pages the trainer makes,
so the run is the one `sr-train` gives, only faster). `eval` scores each run on the first 60 `test` (held-out
openclipart) and 60 `cross` (Wesnoth portraits) pages of the real-art benchmark (`mangacolor realart all`), turned
gray, cut to even sides and reduced ×2 by area: pooled luminance PSNR of bilinear, bicubic, Lanczos, the run through
`Upscaler.upscale` (tiles, uint8; fp32, and the default `--precision auto`) and the run's net on the whole page in
float. Figures go to `superres_synthetic_recipe.json` beside this file."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = Path("~/.cache/manga_colorization/realart/dataset").expanduser()
RUNS = Path(os.environ.get("SRSYN_RUNS", "runs/srsyn"))
CACHE = Path(os.environ.get("SRSYN_CACHE", "~/.cache/manga_colorization/srsyn_pages")).expanduser()
BUDGET = ["--size", "64", "--epochs", "6", "--limit", "2048"]
PAGES = 60


def cached_pages():
    "Make `superres.PageCrops` read its synthetic pages from a disk cache (made on first use)."
    from PIL import Image
    from manga_colorization import superres
    page = superres.PageCrops.page

    def cached(self, i):
        if self.paths is not None: return page(self, i)
        f = CACHE / f"{self.seed}_{self.start + i}_{self.mode}.png"
        if not f.exists():
            f.parent.mkdir(parents=True, exist_ok=True)
            page(self, i).save(f)
        return Image.open(f).convert(self.mode)
    superres.PageCrops.page = cached


def train(name: str, options: list[str]) -> None:
    "`mangacolor sr-train --data synthetic --scale 2` at the small budget, with `options`, into RUNS/name."
    from manga_colorization.cli import main
    cached_pages()
    args = ["sr-train", "--data", "synthetic", "--scale", "2", *BUDGET, "--out", str(RUNS / name),
            "--no-tensorboard", "--overwrite", *options]
    t = time.perf_counter()
    main(args)
    (RUNS / name / "command.json").write_text(json.dumps({"command": "mangacolor " + " ".join(args),
                                                          "seconds": round(time.perf_counter() - t)}))


def pairs(split: str, n: int = PAGES) -> list:
    "(area-reduced ×2, original) gray pages: the first `n` of the split."
    from PIL import Image
    from manga_colorization.data import find_images
    from manga_colorization.superres import downscale
    out = []
    for p in find_images(DATA / split)[:n]:
        page = Image.open(p).convert("L")
        page = page.crop((0, 0, page.width - page.width % 2, page.height - page.height % 2))
        out.append((downscale(page, 2, "area"), page))
    return out


def pooled(outs: list, targets: list) -> float:
    "Pooled PSNR (dB) of float or uint8 gray outputs against uint8 targets, on [0, 255]."
    se = sum(float(((np.asarray(o, np.float64) - np.asarray(t, np.float64)) ** 2).sum()) for o, t in zip(outs, targets))
    px = sum(np.asarray(t).size for t in targets)
    return 10 * math.log10(255 ** 2 * px / se)


def methods(run: Path | None = None) -> dict:
    "Functions small page -> enlarged page (PIL or float array on [0, 255]): the baselines, or a run's two paths."
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from manga_colorization.core import img2tensor
    from manga_colorization.superres import Upscaler
    if run is None:
        size = lambda lr: (lr.width * 2, lr.height * 2)
        bilinear = lambda lr: ((F.interpolate(img2tensor(lr)[None], scale_factor=2, mode="bilinear")[0, 0]
                                .clamp(-1, 1) + 1) * 127.5).numpy()
        return {"bilinear": bilinear, "bicubic": lambda lr: lr.resize(size(lr), Image.Resampling.BICUBIC),
                "lanczos": lambda lr: lr.resize(size(lr), Image.Resampling.LANCZOS)}
    up = Upscaler(run, precision="fp32")
    G = up.G.module.float().eval()

    @torch.no_grad()
    def whole(lr):
        return ((G(img2tensor(lr)[None])[0, 0].clamp(-1, 1) + 1) * 127.5).numpy()
    auto = Upscaler(run)     # the default precision: bf16 where the CPU has bf16 units
    return {"upscale": up.upscale, "float_whole": whole, f"upscale_{auto.G.runner.precision}": auto.upscale}


def evaluate(names: list[str]) -> None:
    "Score the baselines and each run on both splits; merge into superres_synthetic_recipe.json."
    import torch
    torch.set_num_threads(1)
    out = HERE / "superres_synthetic_recipe.json"
    result = json.loads(out.read_text()) if out.exists() else {"pages": PAGES, "runs": {}}
    sets = {s: pairs(s) for s in ("test", "cross")}
    todo = {"baselines": None, **{n: RUNS / n for n in names}}
    for name, run in todo.items():
        scores = {}
        for key, fn in methods(run).items():
            for split, ps in sets.items():
                scores[f"{key}_{split}"] = round(pooled([fn(lr) for lr, _ in ps], [hr for _, hr in ps]), 3)
        if run is not None:
            base = result["runs"]["baselines"]
            scores.update({f"vs_lanczos_{s}": round(scores[f"upscale_{s}"] - base[f"lanczos_{s}"], 3)
                           for s in sets})
            cmd, config = run / "command.json", json.loads((run / "config.json").read_text())
            if cmd.exists(): scores.update(json.loads(cmd.read_text()))
            scores["config"] = {k: config.get(k) for k in ("kernels", "blur", "noise", "jpeg", "tone", "skip", "seed",
                                                           "gen_options", "precision")}
            scores["steps"] = json.loads((run / "generator.json").read_text())["step"]
        result["runs"][name] = scores
        print(name, scores, flush=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "train": train(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "eval": evaluate(sys.argv[2:])
    else: sys.exit(__doc__)
