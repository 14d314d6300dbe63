"""Where a reference model differs from its transfer baseline (issue 22): per-pixel CIEDE2000 of copy-the-gray, the
transfer and the model on the first 160 held-out real colour targets at 64 px (augmented-self references, seed 2026),
binned by the transfer's own error; and an oracle that picks gray or the transfer per pixel.

OMP_NUM_THREADS=1 python benchmarks/reference_diag.py [RUN]   (default: the shipped reference_hints model)"""
import sys

import torch

from manga_colorization.core import rgb_to_gray, rgb_to_lab
from manga_colorization.experiments.reference_study import colour_targets
from manga_colorization.guidance import augmented_reference, transfer_colors
from manga_colorization.metrics import ciede2000_lab, to_unit
from manga_colorization.runs import load_generator, shipped_path

t = colour_targets("~/.cache/manga_colorization/realart/dataset/colour/test", 64, 160)
r, g = augmented_reference(t, torch.Generator().manual_seed(2026)), rgb_to_gray(t)
G = load_generator(sys.argv[1] if len(sys.argv) > 1 else shipped_path("reference_hints"), device="cpu")
with torch.no_grad():
    tr, m = transfer_colors(g, r, samples=1500, remap=False), G.predict_rgb(g, reference=r)
de = {k: ciede2000_lab(rgb_to_lab(to_unit(x)), rgb_to_lab(to_unit(t)))
      for k, x in (("gray", g.expand(-1, 3, -1, -1)), ("transfer", tr), ("model", m))}
print("mean CIEDE2000: " + ", ".join(f"{k} {v.mean():.2f}" for k, v in de.items()))
for lo, hi in ((0, 2), (2, 5), (5, 10), (10, 20), (20, 100)):
    sel = (de["transfer"] >= lo) & (de["transfer"] < hi)
    print(f"transfer error in [{lo}, {hi}): {sel.float().mean():.1%} of pixels; " +
          ", ".join(f"{k} {v[sel].mean():.2f}" for k, v in de.items()))
print(f"oracle min(gray, transfer) per pixel: {torch.minimum(de['gray'], de['transfer']).mean():.2f}")
