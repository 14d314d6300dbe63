"""Which features make the example-based transfer find a character's colours in another picture (issue 23, the
same-character target; an exploration with its own code: the package's `transfer_colors(..., patch=)` samples the
reference as Welsh does and has no layout prior). Welsh et al. (2002) match each gray pixel to a reference
pixel by lightness and its 5x5 deviation (`guidance.transfer_colors`). Here the same nearest-neighbour transfer
compares every reference pixel (not a jittered sample) with features added:
- `patch`: the 5x5 neighbourhood of lightness itself (25 values, weight 0.1), the local drawing around the pixel;
- `layout`: the pixel's place in the box of non-paper pixels of its own picture (weight 0.2), a prior that helps where
  target and reference are framed alike (sprites, augmented selves), not on whole pages.
Each variant's chroma is cleaned by the same 5x5 median. Sources: the held-out Wesnoth unit sprites with another pose of
the same unit as the reference (`reference_poses.py`'s 71 pairs; CIEDE2000 over the character's own pixels), and (a),
the held-out real colour art with its augmented self (386, whole pictures), both at 64 px.

`--with-model` also runs the shipped model with each variant in place of its own transfer (input and residual base),
as it is, not trained with it: what such a transfer might give the model before any training.

OMP_NUM_THREADS=1 python benchmarks/transfer_features.py --with-model --json benchmarks/transfer_features.json"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from manga_colorization import models
from manga_colorization.core import AB_SCALE, lab_to_rgb, rgb_to_gray
from manga_colorization.experiments.bench import machine_info
from manga_colorization.experiments.reference_study import _metrics, _pictures, colour_targets
from manga_colorization.guidance import (_lightness, _local_std, _median, _patches, augmented_reference,
                                         transfer_colors)
from manga_colorization.runs import load_generator, shipped_path

sys.path.insert(0, str(Path(__file__).parent))
from reference_poses import CACHE, UNITS, opaque, pose_pairs  # noqa: E402

VARIANTS = {"lightness + deviation": (0.0, 0.0), "+ patch": (0.1, 0.0), "+ layout": (0.0, 0.2),
            "+ patch + layout": (0.1, 0.2)}


def _layout(L: torch.Tensor) -> torch.Tensor:
    "(H, W, 2) each pixel's place in the box of the picture's non-paper pixels (0..1 inside it)."
    H, W = L.shape
    ys, xs = torch.nonzero(L < 0.97, as_tuple=True)
    if not len(ys): ys, xs = torch.tensor([0, H - 1]), torch.tensor([0, W - 1])
    Y, X = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    return torch.stack([(Y - ys.min()) / (ys.max() - ys.min() + 1), (X - xs.min()) / (xs.max() - xs.min() + 1)], -1)


def _features(L: torch.Tensor, patch: float, layout: float) -> torch.Tensor:
    "(H·W, d): lightness and 5x5 deviation (weights √0.5 each, as `transfer_colors`), then the added features."
    H, W = L.shape
    parts = [torch.stack([L, _local_std(L[None, None])[0, 0]], -1) * 0.5 ** 0.5]
    if patch: parts.append(_patches(L[None, None]) * patch)
    if layout: parts.append(_layout(L) * layout)
    return torch.cat(parts, -1).reshape(H * W, -1)


def transfer(gray: torch.Tensor, refs: torch.Tensor, patch: float, layout: float) -> tuple[torch.Tensor, torch.Tensor]:
    ("(Lab chroma (B, 2, H, W), match distance in lightness + deviation (B, 1, H, W)): each pixel's nearest reference "
     "pixel.")
    L, lab = _lightness(gray.expand(-1, 3, -1, -1))[:, 0], _lightness(refs)
    ab, dist = gray.new_zeros(len(gray), 2, *gray.shape[-2:]), gray.new_zeros(len(gray), 1, *gray.shape[-2:])
    for i in range(len(gray)):
        ft, fr = _features(L[i], patch, layout), _features(lab[i, 0], patch, layout)
        j = torch.cat([torch.cdist(c, fr).argmin(1) for c in ft.split(4096)])
        ab[i] = lab[i, 1:].flatten(1)[:, j].reshape(ab.shape[1:])
        dist[i] = (ft[:, :2] - fr[j, :2]).norm(dim=1).reshape(dist.shape[1:])
    return _median(ab, 5), dist


def _rgb(gray: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    "RGB in [-1, 1]: the gray's lightness with chroma `ab`."
    L = _lightness(gray.expand(-1, 3, -1, -1))[:, :1] * 100
    return (lab_to_rgb(torch.cat([L, ab], 1)) * 2 - 1).clamp(-1, 1)


def _with_transfer(LG, gray, refs, patch, layout) -> torch.Tensor:
    "The model's output with `transfer(patch, layout)` in place of its own transfer."
    def swapped(G, g, rgb, present):
        ab, dist = transfer(g, rgb, patch, layout)
        return ab / AB_SCALE, dist
    own, models._transfer = models._transfer, swapped
    try: return torch.cat([LG.predict_rgb(gray[i:i + 64], reference=refs[i:i + 64]) for i in range(0, len(gray), 64)])
    finally: models._transfer = own


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", default=str(CACHE / "dataset/colour"))
    p.add_argument("--units", default=str(CACHE / "unpacked" / UNITS))
    p.add_argument("--with-model", action="store_true", help="also the shipped model with each variant as its transfer")
    p.add_argument("--json")
    a = p.parse_args(argv)
    t0, real, units = time.time(), Path(a.real), Path(a.units)
    pairs = pose_pairs(real, units)
    poses = dict(targets=_pictures([t for t, _, _ in pairs], 64), refs=_pictures([r for _, r, _ in pairs], 64),
                 masks=torch.stack([opaque(units / n, 64) for _, _, n in pairs]), metric="ciede2000_character")
    ta = colour_targets(real / "test", 64)
    refs_a = augmented_reference(ta, torch.Generator().manual_seed(2026))
    sources = {"poses": poses, "a_real_augmented_self": dict(targets=ta, refs=refs_a, masks=None, metric="ciede2000")}
    LG = load_generator(shipped_path("reference_hints")) if a.with_model else None
    out = {"about": __doc__.split("\n\n")[0], "command": "python benchmarks/transfer_features.py " + " ".join(
        sys.argv[1:] if argv is None else argv), "sources": {}}
    for name, s in sources.items():
        t, r, m, key = s["targets"], s["refs"], s["masks"], s["metric"]
        gray, rows = rgb_to_gray(t), {}
        score = lambda o: round(_metrics(o, t, gray, m)[key], 3)
        rows["copy-the-gray"] = score(gray.expand(-1, 3, -1, -1))
        rows["transfer_colors (4,000 samples, as the studies)"] = score(
            transfer_colors(gray, r, samples=4000, remap=False))
        for v, (patch, layout) in VARIANTS.items():
            rows[f"all pixels, {v}"] = score(_rgb(gray, transfer(gray, r, patch, layout)[0]))
        if LG is not None:
            rows["shipped model, no reference"] = score(LG.predict_rgb(gray))
            rows["shipped model, its own transfer"] = score(torch.cat(
                [LG.predict_rgb(gray[i:i + 64], reference=r[i:i + 64]) for i in range(0, len(gray), 64)]))
            for v, (patch, layout) in VARIANTS.items():
                rows[f"shipped model, untrained with it, all pixels, {v}"] = score(
                    _with_transfer(LG, gray, r, patch, layout))
        out["sources"][name] = {"targets": len(t), "metric": key, "rows": rows}
        for k, v in rows.items(): print(f"{name:22s} {k:66s} {v:7.3f}")
    out.update(cpu=machine_info()["cpu"], wall_time_s=round(time.time() - t0, 1))
    if a.json: Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
