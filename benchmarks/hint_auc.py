"""Hint-AUC of our colorizers: a protocol that no one here wrote (issue 22, "Measure").

Hint-AUC (PyPI `hintauc` 0.3.3; Madono et al., "Hint-AUC: Deterministic Region-based Hint Generation for Line Art
Colorization Evaluation", IEEE TVCG 2026) generates deterministic region hints from each ground truth (Felzenszwalb
regions at the input resolution, brought to a 64 x 64 hint map; per region a scribble along its longest path, or one
dot on it, in the region's mean colour), keeps the hints of the largest int(n_regions * alpha) regions for every hint
ratio alpha of the paper's grid (0, .01, .03, .05, .10, .25, .50, 1), and reports PSNR and SSIM (images at 256 x 256)
integrated over alpha by the trapezoid rule. Equal-area regions are ordered with `tie_break="stable"`.

`hintauc` pins astropy<6 and so numpy<2, which conflicts with onnx: it runs in its own virtual environment
(created once from benchmarks/hint_auc_requirements.txt, default ~/.cache/manga_colorization/hintauc-venv), through
this same file's `_worker` mode, which imports only the standard library, numpy, OpenCV and hintauc. The project side
(our models, colorizing with the given hints) runs in the project's venv. They exchange files in a work folder:
  gt/SOURCE/NAME.png                          the ground truths (colour targets only), SIZE x SIZE RGB
  hints/SOURCE/hints.json                     hintauc's record: regions per image, ratio directories, settings
  hints/SOURCE/TYPE/RATIO/NAME_{col,mask}.png  hint colour and mask at the hint-map size (64), as `at_ratio` gives them
  pred/SOURCE/TYPE/COLORIZER/RATIO/NAME.png   the colorizations, in `hintauc curve`'s layout, with its manifest.json
so `hintauc curve pred/SOURCE/TYPE/COLORIZER gt/SOURCE --metrics mse psnr ssim` re-scores any of them (the same
figures). SSIM is scikit-image's (hintauc's fallback without torchmetrics; the protocol record names the backend).

Colorizers (gray + hints -> RGB): copy-the-gray; the hints spread over the gray with no network
(`experiments.guided_study.spread_only`); hints models (`--hints-run RUN`, or trained here with `--train real` /
`--train synthetic`: the guided study's recipe, `guided_config("real_hints", ...)`, at its budget); a
reference + hints model (`--reference-run RUN`, guidance "reference_hints"; the reference is an augmented-self
reference of the target from a fixed seed). The networks run at their working size (64 for the recipe; the hint
map's 64 x 64 is exactly that) and their Lab chroma is brought to SIZE under the full-resolution gray's lightness.

    python benchmarks/hint_auc.py --train real --train synthetic --json benchmarks/hint_auc.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "hint_auc_requirements.txt"
CACHE = Path("~/.cache/manga_colorization").expanduser()
HINTAUC_VERSION = "0.3.3"
TIE_BREAK = "stable"
DOT_METHOD = "medoid"          # the paper's stored maps
METRICS = ("mse", "psnr", "ssim")


# ----------------------------------------------------------------------------------------------------------------
# the hintauc side: runs inside its own venv (python hint_auc.py _worker hints|curve JOB.json); no project imports
# ----------------------------------------------------------------------------------------------------------------
def _worker_hints(job: dict) -> dict:
    "Deterministic hints of every ground truth, written per hint type and ratio at the hint-map size."
    import cv2
    import hintauc
    from hintauc import DEFAULT_ALPHAS, alpha_dir_name, generate_hints
    out = Path(job["out"])
    record_path = out / "hints.json"
    settings = {"hintauc": hintauc.__version__, "size": job["size"], "path_method": job["path_method"],
                "dot_method": DOT_METHOD, "tie_break": TIE_BREAK, "types": job["types"], "names": job["names"],
                "alphas": list(DEFAULT_ALPHAS)}
    if record_path.is_file():
        old = json.loads(record_path.read_text())
        if old.get("settings") == settings: return old
    dirs = {alpha_dir_name(a): a for a in DEFAULT_ALPHAS}
    images, t0 = {}, time.perf_counter()
    for i, name in enumerate(job["names"]):
        gt = cv2.imread(str(Path(job["gt_dir"]) / name), cv2.IMREAD_COLOR)
        h = generate_hints(gt, size=job["size"], path_method=job["path_method"], dot_method=DOT_METHOD)
        stem = Path(name).stem
        pixels = {}
        for t in job["types"]:
            for d, a in dirs.items():
                col, mask = h.at_ratio(a, hint_type=t, tie_break=TIE_BREAK)
                folder = out / t / d
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / f"{stem}_col.png"), col)       # BGR arrays: the files are RGB
                cv2.imwrite(str(folder / f"{stem}_mask.png"), mask)
                pixels.setdefault(t, {})[d] = int((mask > 0).sum())
        images[name] = {"n_regions": h.n_regions(), "failed_regions": h.failed_regions, "hint_pixels": pixels}
        if (i + 1) % 16 == 0: print(f"  hints {i + 1}/{len(job['names'])}", flush=True)
    record = {"settings": settings, "dirs": dirs, "images": images,
              "hint_time_s": round(time.perf_counter() - t0, 1)}
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def _worker_curve(job: dict) -> list:
    "Hint-AUC of every prediction folder (hintauc's own `evaluate_hint_curve`, through a manifest it can re-read)."
    import hintauc
    from hintauc import Evaluator, evaluate_hint_curve
    from hintauc.evaluate import PROTOCOL_VERSION, protocol_record
    ev = Evaluator(metrics=METRICS, resize=256)
    results = []
    for run in job["runs"]:
        hints = json.loads(Path(run["hints_json"]).read_text())
        s = hints["settings"]
        alphas = sorted(hints["dirs"].values())
        names = list(s["names"])
        manifest = {"protocol": PROTOCOL_VERSION, "hintauc": hintauc.__version__, "hint_type": run["hint_type"],
                    "alphas": alphas, "dirs": hints["dirs"], "names": names, "sources": {n: n for n in names},
                    "n_images": len(names), "oracle": False, "tie_break": s["tie_break"],
                    "path_method": s["path_method"], "dot_method": s["dot_method"], "hint_map_size": s["size"],
                    "note": "written by manga_colorization's benchmarks/hint_auc.py; `hintauc curve <this dir> "
                            "<gt dir>` re-scores exactly these files"}
        Path(run["pred_root"], "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        res = evaluate_hint_curve({}, run["gt_dir"], evaluator=ev, manifest=manifest, pred_root=run["pred_root"],
                                  full_range=True)
        proto = protocol_record(ev, res["alphas"], run["hint_type"], s["size"], s["path_method"], s["dot_method"],
                                tie_break=s["tie_break"], oracle=False, pairing="manifest")
        results.append({**run, "hint_auc": res["hint_auc"], "n_images": res["n_images"],
                        "per_alpha": {str(a): v for a, v in res["per_alpha"].items()}, "protocol": proto})
        print(f"  scored {run['source']} {run['hint_type']} {run['colorizer']}: PSNR {res['hint_auc']['psnr']:.2f}",
              flush=True)
    return results


def _worker(argv: list[str]) -> int:
    kind, job_path = argv
    job = json.loads(Path(job_path).read_text())
    result = _worker_hints(job) if kind == "hints" else _worker_curve(job)
    Path(job["result"]).write_text(json.dumps(result, indent=1) + "\n")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# the hintauc venv
# ----------------------------------------------------------------------------------------------------------------
def venv_python(venv: Path) -> Path: return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(venv: Path, wheel: str | None = None, log=print) -> Path:
    "The venv's python, with hintauc 0.3.3 (created and installed once from the requirements file)."
    py = venv_python(venv)
    check = [str(py), "-c", f"import hintauc, numpy; assert hintauc.__version__ == {HINTAUC_VERSION!r}"]
    if py.is_file() and subprocess.run(check, capture_output=True).returncode == 0: return py
    log(f"creating the Hint-AUC environment {venv} (hintauc {HINTAUC_VERSION}, numpy<2)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["-r", str(REQUIREMENTS)] + ([wheel] if wheel else []), check=True)
    subprocess.run(check, check=True)
    return py


def run_worker(py: Path, kind: str, job: dict, work: Path) -> object:
    job_path, job["result"] = work / f"job_{kind}.json", str(work / f"result_{kind}.json")
    job_path.write_text(json.dumps(job, indent=1) + "\n")
    env = {**os.environ, "PYTHONPATH": ""}
    subprocess.run([str(py), str(Path(__file__).resolve()), "_worker", kind, str(job_path)], check=True, env=env)
    return json.loads(Path(job["result"]).read_text())


# ----------------------------------------------------------------------------------------------------------------
# the project side
# ----------------------------------------------------------------------------------------------------------------
def colour_targets(folder: Path, n: int, size: int):
    ("`n` colour targets (mean Lab chroma >= `metrics.GRAY_CHROMA`) of `folder`, evenly spaced over the sorted list of "
     "its colour targets: names, their paths, and their targets and grays at `size` (`study.eval_dataset`).")
    import torch
    from manga_colorization.experiments.study import eval_dataset
    from manga_colorization.metrics import GRAY_CHROMA, mean_chroma
    ds = eval_dataset(folder, size)
    paths = [Path(p) for p in ds.source.paths]
    colour = [i for i in range(len(ds)) if float(mean_chroma(ds[i][1][None].float())) >= GRAY_CHROMA]
    pick = [colour[(k * len(colour)) // n] for k in range(n)] if len(colour) > n else colour
    pairs = [ds[i] for i in pick]
    rel = [paths[i].relative_to(folder) for i in pick]
    return {"names": ["__".join(r.with_suffix("").parts) + ".png" for r in rel], "files": [str(r) for r in rel],
            "scanned": len(ds), "colour_targets": len(colour), "gray": torch.stack([x[:1] for x, _ in pairs]).float(),
            "target": torch.stack([t for _, t in pairs]).float()}


def save_rgb(t, path: Path) -> None:
    "Write an RGB image (3, H, W) in [-1, 1] as PNG."
    import numpy as np
    from PIL import Image
    a = ((t.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(np.ascontiguousarray(a)).save(path)


def load_hint_maps(folder: Path, names: list[str]):
    "(N, 3, S, S) hint channels of hintauc's hints, as `guidance.hint_map` makes them: ab/110 where hinted, the mask."
    import numpy as np
    import torch
    from PIL import Image
    from manga_colorization.core import AB_SCALE, rgb_to_lab
    out = []
    for n in names:
        stem = Path(n).stem
        col = np.asarray(Image.open(folder / f"{stem}_col.png").convert("RGB"), np.float32) / 255
        mask = torch.from_numpy(np.asarray(Image.open(folder / f"{stem}_mask.png").convert("L")) > 0).float()
        ab = rgb_to_lab(torch.from_numpy(col).permute(2, 0, 1)[None])[0, 1:] / AB_SCALE
        out.append(torch.cat([ab * mask, mask[None]]))
    return torch.stack(out)


def load_run(run: str | Path):
    "A trained run's generator on the CPU, its best checkpoint if it has one (as the guided study loads them)."
    from manga_colorization.runs import Run, load_generator
    p = Path(run).expanduser()
    if p.is_dir():
        r = Run(p)
        return load_generator(r.best_checkpoint if r.best_checkpoint.is_file() else r.path, device="cpu")
    return load_generator(p, device="cpu")


def network_chroma(G, gray, hints, reference=None):
    "Lab chroma ab/110 (B, 2, h, w) that `G` gives for `gray` at its working size with `hints` (and a reference)."
    import torch.nn.functional as F
    from manga_colorization.core import rgb_to_lab_norm
    size = G.size
    small = gray if gray.shape[-1] == size else F.interpolate(gray, size=(size, size), mode="area")
    if hints.shape[-1] != size: hints = F.interpolate(hints, size=(size, size), mode="nearest")
    raw = G(small, hints) if reference is None else G(small, hints, reference=reference)
    return raw if raw.shape[1] == 2 else rgb_to_lab_norm(raw.clamp(-1, 1))[:, 1:]


def make_colorizers(args, log=print) -> dict:
    ("{name: (fn(gray64, gray_full, hints64, target64, batch) -> RGB at full size, description)}; the networks' "
     "chroma goes to full size (bilinear) under the full-resolution lightness.")
    import torch
    import torch.nn.functional as F
    from manga_colorization.core import to_rgb
    from manga_colorization.experiments.guided_study import spread_only
    from manga_colorization.guidance import augmented_reference
    from manga_colorization.metrics import gray_to_rgb

    def full(ab, gray_full):
        return to_rgb(F.interpolate(ab, size=gray_full.shape[-2:], mode="bilinear", align_corners=False), gray_full)

    def of(G):
        return lambda g64, gf, h, t, b: full(network_chroma(G, g64, h), gf)

    cols = {"copy_gray": (lambda g64, gf, h, t, b: gray_to_rgb(gf), "copy-the-gray (`metrics.gray_to_rgb`)"),
            "spread": (of(spread_only()), "the hints spread over the gray, no network "
                                          "(`experiments.guided_study.spread_only`)")}
    for label, run in args.hints_runs:
        G = load_run(run)
        if not G.uses_hints: raise SystemExit(f"--hints-run {run}: not a hints model (guidance {G.guidance})")
        cols[f"hints:{label}"] = (of(G), f"hints model {run} (guidance {G.guidance}, working size {G.size})")
    if args.reference_run:
        try: G = load_run(args.reference_run)
        except Exception as e:
            raise SystemExit(f"--reference-run {args.reference_run}: cannot load it here ({e})") from None
        if not getattr(G, "uses_reference", False) or not G.uses_hints:
            raise SystemExit(f"--reference-run {args.reference_run}: needs a reference + hints model (guidance "
                             f"'reference_hints'); this one has guidance {G.guidance}")

        def ref_fn(g64, gf, h, t, b, G=G):
            ref = augmented_reference(t, torch.Generator().manual_seed(args.seed + b))   # fixed seeded warp
            return full(network_chroma(G, g64, h, reference=ref), gf)
        cols[f"reference_hints:{Path(args.reference_run).name}"] = (
            ref_fn, f"reference + hints model {args.reference_run}: augmented-self reference (seed {args.seed})")
    return cols


def train_runs(which: list[str], data: Path, runs_dir: Path, log=print) -> list[tuple[str, Path]]:
    ("Train (once; resumable) the guided study's hints model (its recipe and budget) on the real-art train split "
     "('real') or on synthetic drawings ('synthetic'): `guided_config('real_hints', ...)`.")
    import dataclasses
    from manga_colorization.experiments.guided_study import guided_config
    from manga_colorization.experiments.study import train_recipe
    out = []
    for w in which:
        c = guided_config("real_hints", runs_dir, data)
        if w == "synthetic": c = dataclasses.replace(c, data="synthetic", out=str(runs_dir / "synthetic_hints"))
        t0 = time.perf_counter()
        status = train_recipe(c)
        log(f"hints model {w}: {status} in {c.out} ({time.perf_counter() - t0:.0f} s)")
        out.append((Path(c.out).name, Path(c.out)))
    return out


@__import__("contextlib").contextmanager
def _no_grad():
    import torch
    with torch.no_grad(): yield


def predict_all(cols: dict, data: dict, hints_record: dict, hints_dir: Path, pred_dir: Path, types, batch: int):
    "Write every colorizer's outputs for every hint type and ratio."
    names = data["names"]
    for t in types:
        for d in hints_record["dirs"]:
            maps = load_hint_maps(hints_dir / t / d, names)
            for c, (fn, _) in cols.items():
                folder = pred_dir / t / c.replace(":", "_") / d
                folder.mkdir(parents=True, exist_ok=True)
                for b0 in range(0, len(names), batch):
                    s = slice(b0, b0 + batch)
                    g64 = data["gray64"][s]
                    with _no_grad():
                        out = fn(g64, data["gray"][s], maps[s], data["target64"][s], b0 // batch)
                    for n, o in zip(names[s], out): save_rgb(o, folder / n)


def table(summary: dict) -> str:
    lines = []
    for src, per in summary["sources"].items():
        lines.append(f"\n{src} ({per['n_images']} colour targets at {summary['settings']['size']} px)")
        lines.append(f"| colorizer | {' | '.join(f'{t} PSNR | {t} SSIM' for t in per['hint_types'])} |")
        lines.append("|---|" + "---:|" * (2 * len(per["hint_types"])))
        for c in per["colorizers"]:
            cells = [f"{per['hint_types'][t][c]['psnr']:.2f} | {per['hint_types'][t][c]['ssim']:.4f}"
                     for t in per["hint_types"]]
            lines.append(f"| {c} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(CACHE / "realart/dataset"),
                   help="the real-art benchmark root (mangacolor realart): test/ and cross/ are measured")
    p.add_argument("--sources", default="test,cross", help="sub-folders of --data to measure (comma-separated)")
    p.add_argument("--n", type=int, default=64, help="colour targets per source (evenly spaced over the sorted list)")
    p.add_argument("--size", type=int, default=256, help="ground-truth side (hintauc scores at 256 x 256)")
    p.add_argument("--hint-size", type=int, default=64, help="hintauc's hint-map side (the paper's 64)")
    p.add_argument("--types", default="dot,scribble", help="hint types")
    p.add_argument("--path-method", default="geodesic", choices=["geodesic", "filfinder"],
                   help="hintauc's longest-path extraction: 'geodesic' (deterministic, ~0.4 s an image) or "
                        "'filfinder' (the paper's; 5-14 s an image here, not bit-exact between runs)")
    p.add_argument("--hints-run", action="append", default=[], metavar="RUN", help="a hints model (repeatable)")
    p.add_argument("--train", action="append", default=[], choices=["real", "synthetic"],
                   help="train the guided study's hints model (its recipe and budget) on this data and measure it")
    p.add_argument("--runs-dir", default=str(CACHE / "hintauc-runs"), help="where --train puts its runs")
    p.add_argument("--reference-run", default=None, metavar="RUN",
                   help="a reference + hints model (guidance reference_hints)")
    p.add_argument("--seed", type=int, default=0, help="seed of the augmented-self references")
    p.add_argument("--work", default=str(CACHE / "hintauc-work"), help="the exchange folder")
    p.add_argument("--venv", default=str(CACHE / "hintauc-venv"), help="hintauc's own virtual environment")
    p.add_argument("--wheel", default=None, help="install hintauc from this wheel file instead of PyPI")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--json", default=None, help="write the results here (e.g. benchmarks/hint_auc.json)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    import shutil
    import torch
    import torch.nn.functional as F
    data_root, work = Path(args.data).expanduser(), Path(args.work).expanduser()
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    py = ensure_venv(Path(args.venv).expanduser(), args.wheel)
    trained = train_runs(args.train, data_root, Path(args.runs_dir).expanduser())
    args.hints_runs = trained + [(Path(r).name, Path(r)) for r in args.hints_run]
    cols = make_colorizers(args)
    summary = {"about": "Hint-AUC (hintauc 0.3.3, Madono et al., TVCG 2026) of copy-the-gray, the hints spread and "
                        "hints models on the real-art benchmark's colour targets (issue 22); benchmarks/hint_auc.py",
               "command": "python benchmarks/hint_auc.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "settings": {"data": str(data_root), "n": args.n, "size": args.size, "hint_size": args.hint_size,
                            "types": types, "path_method": args.path_method, "dot_method": DOT_METHOD,
                            "tie_break": TIE_BREAK, "metrics": list(METRICS), "threads": torch.get_num_threads(),
                            "colour_target": "mean Lab chroma >= metrics.GRAY_CHROMA (4.0)",
                            "networks": "run at their working size; chroma bilinearly to --size under the "
                                        "full-resolution gray's lightness"},
               "colorizers": {c: d for c, (_, d) in cols.items()}, "runs": {}, "sources": {}}
    from manga_colorization.runs import Run
    for label, run in args.hints_runs:
        last = (Run(run).metrics() or [{}])[-1] if run.is_dir() else {}
        summary["runs"][label] = {"path": str(run), "train_time_s": last.get("time_s"), "epochs": last.get("epoch")}
    curve_jobs = []
    for src in [s.strip() for s in args.sources.split(",") if s.strip()]:
        folder = data_root / src
        print(f"{src}: choosing {args.n} colour targets", flush=True)
        data = colour_targets(folder, args.n, args.size)
        data["gray64"] = F.interpolate(data["gray"], size=(64, 64), mode="area")
        data["target64"] = F.interpolate(data["target"], size=(64, 64), mode="area")
        gt_dir = work / "gt" / src
        if gt_dir.is_dir(): shutil.rmtree(gt_dir)
        gt_dir.mkdir(parents=True)
        for n, t in zip(data["names"], data["target"]): save_rgb(t, gt_dir / n)
        hints_dir = work / "hints" / src
        print(f"{src}: hintauc hints ({args.path_method}) for {len(data['names'])} images", flush=True)
        rec = run_worker(py, "hints", {"gt_dir": str(gt_dir), "names": data["names"], "out": str(hints_dir),
                                       "size": args.hint_size, "path_method": args.path_method, "types": types}, work)
        pred_dir = work / "pred" / src
        if pred_dir.is_dir(): shutil.rmtree(pred_dir)
        print(f"{src}: colorizing ({', '.join(cols)})", flush=True)
        predict_all(cols, data, rec, hints_dir, pred_dir, types, args.batch)
        regions = [v["n_regions"] for v in rec["images"].values()]
        summary["sources"][src] = {"n_images": len(data["names"]), "images": data["scanned"],
                                   "colour_targets": data["colour_targets"], "files": data["files"],
                                   "regions_mean": sum(regions) / len(regions), "hint_time_s": rec["hint_time_s"],
                                   "colorizers": list(cols), "hint_types": {}}
        for t in types:
            for c in cols:
                curve_jobs.append({"source": src, "hint_type": t, "colorizer": c, "gt_dir": str(gt_dir),
                                   "pred_root": str(pred_dir / t / c.replace(":", "_")),
                                   "hints_json": str(hints_dir / "hints.json")})
    print(f"scoring {len(curve_jobs)} curves with hintauc", flush=True)
    results = run_worker(py, "curve", {"runs": curve_jobs}, work)
    for r in results:
        per = summary["sources"][r["source"]]["hint_types"].setdefault(r["hint_type"], {})
        per[r["colorizer"]] = {**r["hint_auc"], "per_alpha": r["per_alpha"], "n_images": r["n_images"]}
        summary.setdefault("protocol", {})[r["hint_type"]] = r["protocol"]
    summary["targets"] = {}
    for c in cols:
        if not c.startswith("hints:"): continue
        summary["targets"][c] = {
            f"{src}/{t}": {"model_psnr": v[c]["psnr"], "spread_psnr": v["spread"]["psnr"],
                           "met": v[c]["psnr"] >= v["spread"]["psnr"]}
            for src, per in summary["sources"].items() for t, v in per["hint_types"].items()}
    summary["wall_time_s"] = round(time.perf_counter() - t0, 1)
    print(table(summary))
    for c, tg in summary["targets"].items():
        print(f"target (Hint-AUC PSNR of {c} >= the spread's): "
              + ", ".join(f"{k} {v['model_psnr']:.2f} vs {v['spread_psnr']:.2f} {'met' if v['met'] else 'NOT met'}"
                          for k, v in tg.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker": sys.exit(_worker(sys.argv[2:]))
    sys.exit(main())
