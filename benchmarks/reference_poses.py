"""The shipped reference model given another picture of the same character (issue 23, Targets), a second real source.

Source (d) of `mangacolor reference-study` pairs each Wesnoth portrait with the unit sprite of its character: a
72-px sprite for a painted portrait. Here both pictures are sprites of one character, drawn by the same artists:
the target is each held-out Wesnoth unit sprite of the colour set (`test/wesnoth-units`), the reference another pose
of that unit (attack, defend, idle, move frames; death frames left out) from the unpacked `wesnoth-1.16-data`,
picked by a seeded draw. Neither picture was drawn here and no pose frame is in any training split (the colour set
skips animation frames). Sprites are small on a transparent ground that becomes paper, so besides the house metrics
over the whole picture the rows give CIEDE2000 and pooled PSNR over the character alone (the sprite's opaque pixels).

Rows: copy-the-gray, the example-based transfer, the reference model with the reference and without one,
reference + 10 hints and the spread at 10 hints (`experiments.reference_study.source_rows`).

OMP_NUM_THREADS=1 python benchmarks/reference_poses.py [--model RUN] --json benchmarks/reference_poses.json
(RUN: a reference + hints run or checkpoint; default: the shipped `reference_hints` model)"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from manga_colorization.data import find_images
from manga_colorization.experiments.bench import machine_info
from manga_colorization.experiments.realart import unit_poses, unit_root
from manga_colorization.experiments.reference_study import _pictures, source_rows
from manga_colorization.runs import shipped_path

CACHE = Path("~/.cache/manga_colorization/realart").expanduser()
UNITS = "wesnoth-1.16-data/usr/share/games/wesnoth/1.16/data/core/images/units"


def pose_pairs(real: Path, units: Path, seed: int = 0) -> list[tuple[Path, Path, str]]:
    "(target, reference, name): each test sprite of `real` with a seeded other pose of its unit from `units`."
    rng, out = random.Random(seed), []
    for target in sorted(find_images(real / "test" / "wesnoth-units")):
        rel = target.relative_to(real / "test" / "wesnoth-units")
        root = unit_root(units, rel)          # the unit's name: "lord" for "lord-ne-hammer"
        if root is None: continue
        # in the order of their names' stems (the committed pairs' draw)
        poses = sorted((p for p in unit_poses(units, rel.parent, root) if p.stem != rel.stem), key=lambda p: p.stem)
        if poses: out.append((target, rng.choice(poses), rel.as_posix()))
    return out


def opaque(path: Path, size: int) -> torch.Tensor:
    "(1, size, size) True where the picture is at least half opaque, at the working size (area resize)."
    a = np.asarray(Image.open(path).convert("RGBA"))[..., 3].astype(np.float32) / 255
    return F.interpolate(torch.from_numpy(a)[None, None], size=(size, size), mode="area")[0] >= 0.5


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", default=str(CACHE / "dataset/colour"), help="the colour real-art root")
    p.add_argument("--units", default=str(CACHE / "unpacked" / UNITS), help="the unpacked Wesnoth unit images")
    p.add_argument("--model", default=None, help="reference + hints run or checkpoint (default: shipped)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=2026, help="seed of the hints (the poses' draw uses 0)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    t0, real, units = time.time(), Path(args.real).expanduser(), Path(args.units).expanduser()
    pairs = pose_pairs(real, units)
    targets, refs = _pictures([t for t, _, _ in pairs], args.size), _pictures([r for _, r, _ in pairs], args.size)
    # the dataset's copies are flattened onto paper: the alpha comes from the package
    masks = torch.stack([opaque(units / name, args.size) for _, _, name in pairs])
    model = args.model or str(shipped_path("reference_hints"))
    rows = source_rows(targets, refs, {"reference": model, "reference_hints": model}, masks, seed=args.seed)
    base = rows["reference model, no reference"]
    cut = {k: round(1 - rows["reference model"][k] / base[k], 3) for k in ("ciede2000", "ciede2000_character")}
    command = " ".join(["python benchmarks/reference_poses.py", *(sys.argv[1:] if argv is None else argv)])
    result = {"about": __doc__.split("\n\n")[0], "command": command, "model": args.model or "shipped reference_hints",
              "pairs": [[str(t.relative_to(real)), str(r.relative_to(units))] for t, r, _ in pairs],
              "targets": len(pairs), "size": args.size, "rows": rows,
              "reference_cut_vs_no_reference": cut, "target_cut": 0.2,
              "beats_transfer": {k: rows["reference model"][k] < rows["transfer_colors"][k]
                                 for k in ("ciede2000", "ciede2000_character")},
              "cpu": machine_info()["cpu"], "wall_time_s": round(time.time() - t0, 1)}
    if args.json: Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    for name, r in rows.items():
        print(f"{name:32s} CIEDE2000 {r['ciede2000']:6.3f}  character {r['ciede2000_character']:6.3f}  "
              f"PSNR {r['psnr_pooled']:6.2f}  character {r['psnr_pooled_character']:6.2f}")
    print(f"the reference's cut against no reference: {cut} (target 0.2); beats the transfer: "
          f"{result['beats_transfer']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
