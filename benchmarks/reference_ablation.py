"""Does the reference model use its learned correspondence? An ablation on real art no one here drew.

The reference model has two paths for the reference's colour: the example-based transfer (Welsh et al. 2002: input
and residual base) and a learned dense correspondence (the page's features attend to the reference's at 1/4 and 1/8;
the attended chroma joins the decoder). This script measures, on two sources, what each path carries:

- `model`: the model as it is; `model, correspondence zeroed`: its decoder given zeros where the attended chroma goes;
- `attended chroma at 1/N alone`: the correspondence's own colouring (the attended chroma, upsampled, on the page's
  lightness); `truth pooled to 1/N`: what a perfect correspondence at that scale could give (the target's own chroma
  averaged over the same cells, upsampled);
- the transfer as the model computes it (1,500 reference samples) and copy-the-gray.

Sources: (a) the held-out real colour targets (`test/`, first LIMIT) with their augmented-self reference (fixed seed,
as `mangacolor reference-study` makes it), and the held-out Wesnoth unit sprites with another pose of the same unit as
reference (`benchmarks/reference_poses.py`'s pairs; CIEDE2000 also over the character's own pixels).

OMP_NUM_THREADS=1 python benchmarks/reference_ablation.py [--model RUN] --json benchmarks/reference_ablation.json"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import manga_colorization.models as models
from manga_colorization.core import rgb_to_gray, rgb_to_lab_norm, to_rgb
from manga_colorization.experiments.bench import machine_info
from manga_colorization.experiments.reference_study import _metrics, _pictures, colour_targets
from manga_colorization.guidance import augmented_reference
from manga_colorization.runs import load_generator, shipped_path

sys.path.insert(0, str(Path(__file__).parent))
from reference_poses import CACHE, UNITS, opaque, pose_pairs  # noqa: E402


@torch.no_grad()
def ablation_rows(G, targets: torch.Tensor, refs: torch.Tensor, masks: torch.Tensor | None) -> dict:
    "The rows above for one source (a `torch` module `G` of a reference model)."
    gray, rows = rgb_to_gray(targets), {}
    def row(name, ab): rows[name] = _metrics(to_rgb(ab.clamp(-1, 1), gray), targets, gray, masks)
    row("copy-the-gray", torch.zeros_like(targets[:, :2]))
    guide, seen = models._reference_guide(G, gray, refs), {}
    row("transfer (the model's, 1,500 samples)", guide["base"])
    original = models._correspondence
    def keep(G_, skips, ref):
        seen.update(out := original(G_, skips, ref))
        return out
    try:
        models._correspondence = keep
        row("model", G(gray, reference=refs))
        models._correspondence = lambda G_, skips, ref: {k: torch.zeros_like(v) for k, v in original(G_, skips,
                                                                                                     ref).items()}
        row("model, correspondence zeroed", G(gray, reference=refs))
    finally: models._correspondence = original
    truth = rgb_to_lab_norm(targets)[:, 1:]
    for lv, c in sorted(seen.items()):
        up = lambda t: F.interpolate(t, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        row(f"attended chroma at 1/{2 ** lv} alone", up(c[:, :2]))
        row(f"truth pooled to 1/{2 ** lv}", up(F.avg_pool2d(truth, 2 ** lv)))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", default=str(CACHE / "dataset/colour"), help="the colour real-art root")
    p.add_argument("--units", default=str(CACHE / "unpacked" / UNITS), help="the unpacked Wesnoth unit images")
    p.add_argument("--model", default=None, help="a reference model: run or checkpoint (default: the shipped one)")
    p.add_argument("--limit", type=int, default=160, help="held-out real targets of source (a)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    t0, real, units = time.time(), Path(args.real).expanduser(), Path(args.units).expanduser()
    G = load_generator(args.model or shipped_path("reference_hints")).module.eval()
    t = colour_targets(real / "test", args.size, args.limit)
    sources = {"a_real_augmented_self": {"targets": len(t), **ablation_rows(
        G, t, augmented_reference(t, torch.Generator().manual_seed(args.seed)), None)}}
    pairs = pose_pairs(real, units)
    masks = torch.stack([opaque(units / name, args.size) for _, _, name in pairs])
    targets, refs = _pictures([a for a, _, _ in pairs], args.size), _pictures([b for _, b, _ in pairs], args.size)
    sources["wesnoth_poses"] = {"targets": len(pairs), **ablation_rows(G, targets, refs, masks)}
    command = " ".join(["python benchmarks/reference_ablation.py", *(sys.argv[1:] if argv is None else argv)])
    result = {"about": __doc__.split("\n\n")[0], "command": command, "model": args.model or "shipped reference_hints",
              "size": args.size, "sources": sources, "cpu": machine_info()["cpu"],
              "wall_time_s": round(time.time() - t0, 1)}
    if args.json: Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    for src, rows in sources.items():
        print(f"{src} ({rows['targets']} targets)")
        for name, r in rows.items():
            if name == "targets": continue
            extra = f"  character {r['ciede2000_character']:6.3f}" if "ciede2000_character" in r else ""
            print(f"  {name:40s} CIEDE2000 {r['ciede2000']:6.3f}{extra}  PSNR {r['psnr_pooled']:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
