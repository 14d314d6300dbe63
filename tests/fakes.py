"""Test fixtures: run and grid folders laid out like training writes them, with made-up metrics and samples (no
training).

Used by tests/test_gallery.py and (from a `#| hide` cell) by nbs/15_gallery.ipynb."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["fake_picture", "fake_run", "fake_grid"]


def fake_picture(rng: np.random.Generator, size: int) -> np.ndarray:
    "A smooth random colour picture with a few dark lines, HxWx3 uint8."
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    for c in range(3):
        a, b, ph = rng.uniform(1, 4, 3)
        img[..., c] = 0.5 + 0.4 * np.sin(a * math.pi * xx + b * math.pi * yy + ph * 3)
    for _ in range(3):
        k = rng.integers(1, size - 1)
        img[k, :] = img[:, k] = 0.05
    return (img.clip(0, 1) * 255).astype(np.uint8)


def _sheet(rows) -> Image.Image:
    ("One sample sheet as training writes it: a white label band (less than a tile high), then a row of square tiles "
     "`input | output | target` per image.")
    rgb = lambda a: np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a
    tiles = np.concatenate([np.concatenate([rgb(t) for t in r], 1) for r in rows], 0)
    band = np.full((min(12, len(rows[0][0]) - 1), tiles.shape[1], 3), 255, np.uint8)
    return Image.fromarray(np.concatenate([band, tiles], 0))


def _record(epoch: int, epochs: int, quality: float, loss: str) -> dict:
    "A made-up metrics.jsonl record that improves with the epoch."
    t = epoch / epochs
    return {"epoch": epoch, "step": epoch * 10, "psnr": 18 + 8 * quality * t, "ssim": 0.6 + 0.3 * quality * t,
            "colorfulness": 20 + 10 * t, "delta_e": 20 - 10 * quality * t, "baseline_psnr": 18.0, "baseline_ssim": 0.6,
            "loss_g": 1.0 / (1 + 3 * quality * t), "loss_adv": 0.7, "loss_l1": 0.5 / (1 + 3 * quality * t),
            "loss_vgg": 0.0 if loss == "l1" else 0.3 / (1 + t), "loss_anime": 0.0, "loss_d": 0.69,
            "images_per_s": 100.0, "time_s": float(epoch)}


def fake_run(run: str | Path, arch: str = "unet", loss: str = "l1", epochs: int = 3, targets=None, size: int = 32,
             seed: int = 0,
             quality: float = 0.75, generator: bool = True) -> dict:
    ("A run folder with config.json, metrics.jsonl, samples/epoch_NNN.png (and a tiny random generator); its last "
     "record.")
    run = Path(run); (run / "samples").mkdir(parents=True, exist_ok=True)
    if targets is None: targets = [fake_picture(np.random.default_rng(seed), size) for _ in range(2)]
    grays = [np.asarray(Image.fromarray(t).convert("L")) for t in targets]
    config = {"data": "synthetic", "arch": arch, "loss": loss, "size": size, "epochs": epochs, "seed": seed,
              "input_mode": "gray", "fake": True}
    (run / "config.json").write_text(json.dumps(config))
    with open(run / "metrics.jsonl", "w") as f:
        for epoch in range(1, epochs + 1):
            mix = min(1.0, 0.2 + quality * epoch / epochs)
            outputs = [(mix * tg + (1 - mix) * np.repeat(g[..., None], 3,
                                                         -1)).astype(np.uint8) for tg, g in zip(targets, grays)]
            _sheet(list(zip(grays, outputs, targets))).save(run / "samples" / f"epoch_{epoch:03d}.png")
            rec = _record(epoch, epochs, quality, loss)
            f.write(json.dumps(rec) + "\n")
    if generator:
        from manga_colorization.models import make_generator, save_generator
        G = make_generator(arch, pretrained=False, width=8, depth=5)
        save_generator(G, run, {"size": size, "input_mode": "gray", "out_ch": 3, "color_space": "rgb"})
    return rec


def fake_grid(out: str | Path, archs=("unet", "unet_att"), losses=("l1", "perceptual"), epochs: int = 3,
              n_images: int = 4,
              size: int = 32, seed: int = 0, generators: bool = True) -> Path:
    ("A grid folder laid out like `grid.run_grid`'s (one run per `<arch>__<loss>`, results.csv), with made-up metrics "
     "and samples.")
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    targets = [fake_picture(rng, size) for _ in range(n_images)]
    results = []
    for arch, loss in ((a, l) for a in archs for l in losses):
        rec = fake_run(out / f"{arch}__{loss}", arch, loss, epochs, targets, size, seed, 0.5 + 0.5 * rng.random(),
                       generators)
        results.append({"run": f"{arch}__{loss}", "arch": arch, "loss": loss,
                        **{k: rec[k] for k in ("psnr", "ssim", "delta_e", "colorfulness", "baseline_psnr")}})
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0])); w.writeheader(); w.writerows(results)
    return out
