"""Upscalers against bicubic and Lanczos on the offline real-art benchmark (issue 15), written next to this file.

    mangacolor realart all              # the images, under ~/.cache/manga_colorization/realart/dataset
    mangacolor sr-train --data ~/.cache/manga_colorization/realart/dataset --scale 2 --out runs/sr_x2 ...
                                        # (see superres_results.md)
    python benchmarks/superres.py --runs runs/sr_x2 runs/sr_x4
                                        # measure: superres_results.{json,md}, superres_gallery.png, superres_edges.png

Held-out pages (test: openclipart never trained on nor validated on; cross: Wesnoth portraits, another domain), turned
gray, cut to a multiple of the scale and reduced with bicubic (the textbook benchmark) — and, as a second row, with the
manga degradations (seeded). Scores are on luminance: PSNR per image and pooled, SSIM, edge sharpness (1.0 = as crisp as
the original)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path("~/.cache/manga_colorization/realart/dataset").expanduser()


def held_out(data: Path) -> dict:
    "The measured splits: test (held-out openclipart) and cross (Wesnoth portraits), as `PageCrops` (gray)."
    from manga_colorization.data import find_images
    from manga_colorization.superres import PageCrops
    return {split: PageCrops(find_images(data / split)) for split in ("test", "cross") if (data / split).is_dir()}


def measure(runs: list[Path], data: Path, limit: int | None = None) -> dict:
    "Rows of every method on each held-out split, scale (from the runs) and reduction."
    from manga_colorization.superres import CLEAN, Degradation, Upscaler, compare_upscalers, eval_pairs
    ups = [Upscaler(r) for r in runs]
    sources, rows = held_out(data), []
    for scale in sorted({u.scale for u in ups}):
        mine = {f"{u.G.config['name']} ({Path(r).name})": u for u, r in zip(ups, runs) if u.scale == scale}
        for split in sources:
            for reduction, deg in (("bicubic", CLEAN), ("manga", Degradation())):
                t = time.perf_counter()
                pairs = eval_pairs(sources[split], scale, limit, deg, seed=1)
                for r in compare_upscalers(pairs, scale, mine):
                    rows.append({"split": split, "scale": scale, "reduction": reduction, "pages": len(pairs), **r})
                print(f"x{scale} {split} {reduction}: {len(pairs)} pages, {time.perf_counter() - t:.0f} s",
                      file=sys.stderr)
    return {"runs": [str(r) for r in runs], "data": str(data), "rows": rows}


def markdown(result: dict) -> str:
    "The results as Markdown tables, one per (scale, split, reduction), with the gain over Lanczos."
    lines = []
    keys = sorted({(r["scale"], r["split"], r["reduction"]) for r in result["rows"]},
                  key=lambda k: (k[0], k[1] != "test", k[2] != "bicubic"))
    for scale, split, reduction in keys:
        rows = [r for r in result["rows"] if (r["scale"], r["split"], r["reduction"]) == (scale, split, reduction)]
        lanczos = next(r for r in rows if r["method"] == "lanczos")
        lines += [f"**x{scale}, {split} ({rows[0]['pages']} pages), reduced by {reduction}**", "",
                  "| method | PSNR pooled (dB) | vs Lanczos | PSNR mean | SSIM | edge sharpness |",
                      "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['method']} | {r['psnr_pooled']:.2f} | {r['psnr_pooled'] - lanczos['psnr_pooled']:+.2f} | "
                  f"{r['psnr']:.2f} | "
                  f"{r['ssim']:.4f} | {r['sharpness']:.2f} |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def figures(result: dict, runs: list[Path], data: Path, out: Path):
    "The crop gallery (x2 and x4 where there are runs) and the edge-sharpness figure."
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    from manga_colorization.superres import CLEAN, Upscaler, crop_gallery, eval_pairs
    ups, test = [Upscaler(r) for r in runs], held_out(data)["test"]
    sheets = []
    for scale in sorted({u.scale for u in ups}):
        mine = {u.G.config["name"]: u for u in ups if u.scale == scale}
        pairs = eval_pairs(test, scale, 40, CLEAN, seed=1)
        pairs = sorted(pairs, key=lambda p: -p[1].width * p[1].height)[:3]
        sheets.append(crop_gallery(pairs, scale, mine, size=128))
    width = max(s.width for s in sheets)
    gallery = Image.new("L", (width, sum(s.height + 6 for s in sheets)), 255)
    y = 0
    for s in sheets: gallery.paste(s, (0, y)); y += s.height + 6
    gallery.save(out / "superres_gallery.png", optimize=True)
    rows = [r for r in result["rows"] if r["reduction"] == "bicubic" and r["split"] == "test"]
    fig, ax = plt.subplots(figsize=(5, 2.4), dpi=100)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    scales = sorted({r["scale"] for r in rows})
    for i, m in enumerate(methods):
        vals = [next((r["sharpness"] for r in rows if r["method"] == m and r["scale"] == s), 0) for s in scales]
        ax.bar([k + i * 0.8 / len(methods) for k in range(len(scales))], vals, 0.8 / len(methods), label=m)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks([k + 0.4 - 0.4 / len(methods) for k in range(len(scales))], [f"x{s}" for s in scales])
    ax.set_ylabel("edge sharpness\n(original = 1)"); ax.legend(fontsize=7, loc="lower right"); fig.tight_layout()
    fig.savefig(out / "superres_edges.png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, type=Path, help="upscaler run folders (mangacolor sr-train)")
    p.add_argument("--data", type=Path, default=DATA, help="the real-art dataset (mangacolor realart all)")
    p.add_argument("--limit", type=int, default=None, help="pages per split (default: all)")
    p.add_argument("--out", type=Path, default=HERE, help="where the results go (default: benchmarks/)")
    p.add_argument("--command", default=None, help="the training commands, recorded in the JSON")
    args = p.parse_args(argv)
    if not args.data.is_dir(): sys.exit(f"{args.data}: no dataset; run mangacolor realart all")
    result = {"command": "python benchmarks/superres.py " + " ".join(sys.argv[1:]), "training": args.command,
              "threads": os.environ.get("OMP_NUM_THREADS"), **measure(args.runs, args.data, limit=args.limit)}
    for r in args.runs:
        meta = json.loads((Path(r) / "generator.json").read_text())
        result.setdefault("models", {})[str(r)] = {"generator": meta.get("generator"), "epoch": meta.get("epoch"),
                                                   "step": meta.get("step")}
    (args.out / "superres_results.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "superres_results.md").write_text(markdown(result) + "\n")
    figures(result, args.runs, args.data, args.out)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
