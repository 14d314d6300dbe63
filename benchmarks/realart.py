"""A real-art benchmark anyone can rebuild offline (issue 13): Debian's openclipart PNGs (train / val for model selection /
test, held out for reporting) and Wesnoth's painted portraits (held out entirely: the cross-domain test), as folders
`SketchDataModule` reads: OUT/train, OUT/val, OUT/test (in-domain) and OUT/cross (cross-domain, not a split SketchDataModule
loads; evaluate it as a folder). Near-duplicate name families (`x_01.png`, `x_02.png`, `x.png`) stay on one side.

    python benchmarks/realart.py fetch              # apt-get download + dpkg -x into the cache (no root needed)
    python benchmarks/realart.py build              # write OUT/train, OUT/val, OUT/test, OUT/cross as checked by realart_split.json
    python benchmarks/realart.py all                # both
    python benchmarks/realart.py build --write-split  # make a new split list (results are then not comparable)

The images are never committed; `benchmarks/realart_split.json` (paths, sha256, split, size, package versions) is.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SPLIT_LIST = HERE / "realart_split.json"
DEFAULTS = {"seed": 0, "heldout": 0.1, "val": 0.05, "max_pixels": 40_000_000, "max_side": 512}
SPLIT_PARAMS = ("seed", "heldout", "val", "max_pixels")
SPLITS = ("train", "val", "test", "cross")            # folders of OUT: in-domain train / selection / report; cross-domain      # the parameters that decide which files land in which split
MANIFEST = "realart.json"                             # written into the dataset folder: marks it as ours


class RealArtError(Exception):
    "A problem the user can fix, said in one line."


@dataclass(frozen=True)
class Source:
    "One real-art source: a Debian package, the folder of images inside it, and where its images go."
    name: str
    package: str
    root: str           # the images' folder inside the package
    heldout_only: bool  # True: every image goes to the cross-domain split (OUT/cross)


SOURCES = (Source("openclipart", "openclipart-png", "usr/share/openclipart/png", False),
           Source("wesnoth", "wesnoth-1.16-data", "usr/share/games/wesnoth/1.16/data/core/images/portraits", True))


def cache_root(cache: str | os.PathLike | None = None) -> Path:
    "`cache`, else `$MANGACOLOR_CACHE/realart`, else `$XDG_CACHE_HOME/manga_colorization/realart` (as `data.default_cache_dir`)."
    if cache: return Path(cache).expanduser()
    if os.environ.get("MANGACOLOR_CACHE"): return Path(os.environ["MANGACOLOR_CACHE"]).expanduser() / "realart"
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "manga_colorization" / "realart"

# ---------------------------------------------------------------- fetch: apt-get download + dpkg -x


def _run(args: list, cwd: Path | None = None) -> subprocess.CompletedProcess:
    "Run a command, capturing its output; a one-line error when the tool is missing."
    try: return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError: raise RealArtError(f"{args[0]} not found: this needs a Debian/Ubuntu system (apt-get, dpkg-deb)") from None


def find_deb(debs: Path, package: str) -> Path | None:
    "The downloaded .deb of `package` in `debs` (None when absent; an error when several versions lie there)."
    found = sorted(debs.glob(f"{package}_*.deb"))
    if len(found) > 1: raise RealArtError(f"several .deb files of {package} in {debs}: keep one ({', '.join(p.name for p in found)})")
    return found[0] if found else None


def download(package: str, debs: Path) -> Path:
    "`apt-get download` the package into `debs` unless it is already there; the .deb."
    deb = find_deb(debs, package)
    if deb: return deb
    debs.mkdir(parents=True, exist_ok=True)
    r = _run(["apt-get", "download", package], cwd=debs)
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or ["no message"])[-1]
        hint = "; run `apt-get update` once (as root) and retry" if "locate" in why or "candidate" in why else ""
        raise RealArtError(f"apt-get download {package} failed: {why}{hint}")
    deb = find_deb(debs, package)
    if deb is None: raise RealArtError(f"apt-get download {package} left no {package}_*.deb in {debs}")
    return deb


def deb_version(deb: Path) -> str:
    "The Version field of a .deb (`dpkg-deb -f`)."
    r = _run(["dpkg-deb", "-f", str(deb), "Version"])
    if r.returncode != 0 or not r.stdout.strip(): raise RealArtError(f"{deb}: not a readable .deb ({r.stderr.strip() or 'no Version'})")
    return r.stdout.strip()


def unpack(deb: Path, dest: Path, version: str) -> None:
    "`dpkg -x` the .deb into `dest` (via a temporary folder, so a half unpack never counts), unless that version is there."
    if installed_version(dest.parent.parent, dest.name, missing_ok=True) == version: return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    r = _run(["dpkg-deb", "-x", str(deb), str(tmp)])
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RealArtError(f"dpkg-deb -x {deb} failed: {r.stderr.strip()}")
    (tmp / ".version").write_text(version + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def installed_version(cache: Path, package: str, missing_ok: bool = False) -> str | None:
    "The version of `package` unpacked under `cache/unpacked` (None, or an error, when it is not there)."
    marker = cache / "unpacked" / package / ".version"
    if marker.is_file(): return marker.read_text().strip()
    if missing_ok: return None
    raise RealArtError(f"{package} is not unpacked in {cache / 'unpacked'}: run `python benchmarks/realart.py fetch` first")


def fetch(cache: Path) -> dict[str, str]:
    "Download and unpack every source package into `cache` (skipping what is done); `{package: version}`."
    versions = {}
    for src in SOURCES:
        deb = download(src.package, cache / "debs")
        versions[src.package] = deb_version(deb)
        unpack(deb, cache / "unpacked" / src.package, versions[src.package])
    return versions

# ---------------------------------------------------------------- images: scan, hash, check, render


def sha256_file(path: Path) -> str:
    "The sha256 of a file's bytes."
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""): h.update(block)
    return h.hexdigest()


def scan(cache: Path, src: Source) -> tuple[list[dict], int]:
    "The PNG files of a source as `{source, path (inside the package), file}`, sorted, and the number of symlinks skipped."
    base = cache / "unpacked" / src.package
    root = base / src.root
    if not root.is_dir(): raise RealArtError(f"{root}: no such folder in the unpacked {src.package} (is it the right version?)")
    files, links = [], 0
    for p in sorted(root.rglob("*")):
        if not p.name.lower().endswith(".png") or p.is_dir(): continue
        if p.is_symlink(): links += 1; continue        # openclipart's aliases of files listed elsewhere
        files.append({"source": src.name, "path": p.relative_to(base).as_posix(), "file": p})
    return files, links


@contextmanager
def pixel_limit(n: int | None):
    "PIL's decompression-bomb limit set to `n` pixels (None: off) inside the block, its warning silenced."
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = n
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally: Image.MAX_IMAGE_PIXELS = old


def header_size(path: Path) -> tuple[int, int]:
    "(width, height) from the header alone (nothing is decompressed, so PIL's bomb limit is off); raises on an unreadable header."
    with pixel_limit(None), Image.open(path) as img: return img.size


def _to_8bit(img: Image.Image) -> Image.Image:
    "A 16-bit or float PIL image as 8-bit L (scaled as `manga_colorization.data.load_image` does)."
    arr = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode != "F" else (1.0 if arr.max() <= 1.0 else 255.0)
    return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def flatten_on_white(img: Image.Image) -> Image.Image:
    "Any PIL image as RGB; transparency (alpha channel, palette or colour key) composited on white."
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"): img = _to_8bit(img)
    if "transparency" in img.info or img.mode in ("LA", "La", "PA", "RGBa"): img = img.convert("RGBA")
    if img.mode != "RGBA": return img.convert("RGB")
    out = Image.new("RGB", img.size, (255, 255, 255))
    out.paste(img, mask=img.getchannel("A"))
    return out


def render(path: Path, dst: Path, max_side: int) -> None:
    "Decode `path` fully, composite on white, shrink so the longer side is at most `max_side` (Lanczos), save as PNG at `dst`."
    with Image.open(path) as img:
        img.load()
        rgb = flatten_on_white(img)
    if max(rgb.size) > max_side: rgb.thumbnail((max_side, max_side), Image.LANCZOS, reducing_gap=3.0)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    rgb.save(tmp, format="PNG", compress_level=6)
    os.replace(tmp, dst)


def _render_one(job: tuple) -> str | None:
    "Render one (source file, rendered file, max_side, max_pixels) unless done; None, or the error in one line."
    path, dst, max_side, max_pixels = job
    if dst.is_file(): return None
    try:
        with pixel_limit(max_pixels): render(path, dst, max_side)
    except Exception as e: return f"{type(e).__name__}: {e}"   # noqa: BLE001 (PIL raises many kinds for broken files)
    return None


def render_all(entries: list[dict], store: Path, params: dict, jobs: int = 1) -> dict[str, str]:
    "Render every entry into `store/<sha256>.png` (skipping done ones); `{path: error}` of the unreadable ones."
    work = [(e["file"], store / f"{e['sha256']}.png", params["max_side"], params["max_pixels"]) for e in entries]
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(jobs) as pool: errors = list(pool.map(_render_one, work, chunksize=32))
    else: errors = [_render_one(w) for w in work]
    return {e["path"]: err for e, err in zip(entries, errors) if err}

# ---------------------------------------------------------------- the split list


def survey(entries: list[dict], max_pixels: int) -> tuple[list[dict], dict]:
    "Hash every file and read its header: the kept entries (with sha256, size) and the counts dropped (duplicate, too large, unreadable)."
    kept, seen, counts = [], set(), {"duplicates": 0, "too_large": 0, "unreadable": 0}
    for e in entries:
        e["sha256"] = sha256_file(e["file"])
        if e["sha256"] in seen: counts["duplicates"] += 1; continue
        seen.add(e["sha256"])
        try: e["size"] = list(header_size(e["file"]))
        except Exception: counts["unreadable"] += 1; continue   # noqa: BLE001 (any header PIL cannot parse)
        if e["size"][0] * e["size"][1] > max_pixels: counts["too_large"] += 1; continue
        kept.append(e)
    return kept, counts


_NUMBERED = re.compile(r"[\s_\-.]*\(?\d+\)?$")

def family(path: str) -> str:
    "The name family of a file: its lower-case stem without a trailing number (`dog_01.png`, `Dog-2.png`, `dog.png` → 'dog'), any folder."
    stem = _NUMBERED.sub("", Path(path).stem.lower())
    return stem or Path(path).stem.lower()

def _families(pool: list[dict]) -> list[list[dict]]:
    "The entries grouped by name family, in a fixed order (each family's smallest sha256)."
    groups: dict[str, list[dict]] = {}
    for e in pool: groups.setdefault(family(e["path"]), []).append(e)
    return sorted(groups.values(), key=lambda g: min(e["sha256"] for e in g))

def assign_splits(entries: list[dict], seed: int, heldout: float, val: float = 0.0) -> None:
    "Set each entry's split: held-out-only sources → cross; the rest by whole name families in a seeded order → test (`heldout` share), val (`val` share), train."
    for e in entries:
        if e["heldout_only"]: e["split"] = "cross"
    pool = [e for e in entries if not e["heldout_only"]]
    groups = _families(pool)
    quota = {"test": round(heldout * len(pool)), "val": round(val * len(pool))}
    for i in np.random.default_rng(seed).permutation(len(groups)).tolist():
        split = next((s for s in ("test", "val") if quota[s] > 0), "train")
        for e in groups[i]: e["split"] = split
        if split != "train": quota[split] -= len(groups[i])


def split_record(entries: list[dict], versions: dict, counts: dict, params: dict) -> dict:
    "The committed split list: parameters, package versions, per-source counts and one row per kept file."
    files = sorted(entries, key=lambda e: e["path"])
    return {"about": "Real-art benchmark split (issue 13); rebuild with `python benchmarks/realart.py all`",
            "params": {k: params[k] for k in DEFAULTS},
            "packages": {s.package: versions[s.package] for s in SOURCES},
            "sources": {s.name: {"package": s.package, "root": s.root, "splits": ["cross"] if s.heldout_only else ["train", "val", "test"],
                                 **counts[s.name]} for s in SOURCES},
            "files": [{"path": e["path"], "sha256": e["sha256"], "split": e["split"], "size": e["size"]} for e in files]}


def write_split_list(record: dict, path: Path) -> None:
    "Write the split list as JSON with one file per line (diffs stay readable)."
    head = json.dumps({k: v for k, v in record.items() if k != "files"}, indent=1)
    rows = ",\n".join("  " + json.dumps(f) for f in record["files"])
    path.write_text(head[:-2] + ',\n "files": [\n' + rows + "\n ]\n}\n")


def read_split_list(path: Path) -> dict | None:
    "The split list at `path` (None when there is none)."
    if not path.is_file(): return None
    try: return json.loads(path.read_text())
    except json.JSONDecodeError as e: raise RealArtError(f"{path}: not valid JSON ({e}); rerun with --write-split to remake it") from None


def verify(record: dict, versions: dict, params: dict, hashes: dict, where: Path) -> None:
    "Check that the unpacked packages, parameters and files are those of the split list; one-line error on the first difference."
    again = f"; rerun with --write-split for a new split (results then are not comparable with {where.name})"
    for pkg, v in record["packages"].items():
        if versions.get(pkg) != v: raise RealArtError(f"{where}: {pkg} is version {v} there but {versions.get(pkg)} here{again}")
    for k in SPLIT_PARAMS:
        if params[k] != record["params"].get(k): raise RealArtError(f"{where}: --{k.replace('_', '-')} is {record['params'].get(k)} there but {params[k]} here{again}")
    bad = [f for f in record["files"] if hashes.get(f["path"]) != f["sha256"]]
    if bad:
        f = bad[0]
        raise RealArtError(f"{where}: {len(bad)} file(s) differ from the unpacked packages, first {f['path']} "
                           f"(sha256 {f['sha256'][:12]} there, {(hashes.get(f['path']) or 'missing')[:12]} here){again}")

# ---------------------------------------------------------------- build


def materialize(out: Path, entries: list[dict], store: Path, manifest: dict) -> None:
    "Hard-link (or copy) each rendered image to OUT/<split>/<path under its source root>, unless OUT already holds this exact set."
    if (out / MANIFEST).is_file() and json.loads((out / MANIFEST).read_text()) == manifest: return
    for split in SPLITS: shutil.rmtree(out / split, ignore_errors=True)
    roots = {s.name: s.root for s in SOURCES}
    for e in entries:
        dst = out / e["split"] / Path(e["path"]).relative_to(roots[e["source"]]).with_suffix(".png")
        dst.parent.mkdir(parents=True, exist_ok=True)
        try: os.link(store / f"{e['sha256']}.png", dst)
        except OSError: shutil.copyfile(store / f"{e['sha256']}.png", dst)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def check_out(out: Path) -> None:
    "Refuse a dataset folder that holds anything but a previous realart build (its train/, val/, test/, cross/ get replaced)."
    if out.is_file(): raise RealArtError(f"{out} is a file, not a folder: give another --out")
    if not out.is_dir() or (out / MANIFEST).is_file(): return
    if any(not p.name.startswith(".") for p in out.iterdir()):
        raise RealArtError(f"{out} is a non-empty folder that is not a realart dataset (no {MANIFEST}): give another --out")


def check_params(params: dict) -> None:
    "One-line error on a parameter out of range."
    if not 0 <= params["heldout"] < 1: raise RealArtError(f"--heldout must be in [0, 1), got {params['heldout']}")
    if not 0 <= params["val"] < 1 - params["heldout"]: raise RealArtError(f"--val must be in [0, 1 - heldout), got {params['val']}")
    for k in ("max_pixels", "max_side"):
        if params[k] < 1: raise RealArtError(f"--{k.replace('_', '-')} must be at least 1, got {params[k]}")


def _collect(cache: Path) -> tuple[list[dict], dict]:
    "Every source's PNG entries (marked held-out-only or not) and per-source symlink counts."
    entries, counts = [], {}
    for src in SOURCES:
        files, links = scan(cache, src)
        for f in files: f["heldout_only"] = src.heldout_only
        entries += files
        counts[src.name] = {"found": len(files) + links, "symlinks": links}
    return entries, counts


def _new_split(entries: list[dict], counts: dict, params: dict, store: Path, jobs: int) -> list[dict]:
    "Survey, render and split every entry from scratch; the kept ones (counts updated in place)."
    kept = []
    for src in SOURCES:
        mine, dropped = survey([e for e in entries if e["source"] == src.name], params["max_pixels"])
        bad = render_all(mine, store, params, jobs)
        dropped["unreadable"] += len(bad)
        kept += [e for e in mine if e["path"] not in bad]
        counts[src.name].update(dropped, kept=sum(e["path"] not in bad for e in mine))
    assign_splits(kept, params["seed"], params["heldout"], params["val"])
    return kept


def _listed_split(record: dict, entries: list[dict], versions: dict, params: dict, store: Path, where: Path, jobs: int) -> list[dict]:
    "The split list's entries, after checking them against the unpacked files, rendered."
    by_path = {e["path"]: e for e in entries}
    hashes = {p: sha256_file(by_path[p]["file"]) for p in (f["path"] for f in record["files"]) if p in by_path}
    verify(record, versions, params, hashes, where)
    kept = [{**by_path[f["path"]], **f} for f in record["files"]]
    bad = render_all(kept, store, params, jobs)
    if bad: raise RealArtError(f"{len(bad)} listed file(s) could not be decoded here, first {next(iter(bad))}: {next(iter(bad.values()))}")
    return kept


def build(cache: Path, out: Path, split_path: Path = SPLIT_LIST, write_split: bool = False, jobs: int = 1, **overrides) -> dict:
    "Write the dataset folder OUT (train/, val/, test/, cross/) from the unpacked packages, checked against (or making) the split list."
    t0 = time.time()
    check_out(out)
    record = None if write_split else read_split_list(split_path)
    params = {**DEFAULTS, **(record["params"] if record else {}), **{k: v for k, v in overrides.items() if v is not None}}
    check_params(params)
    versions = {s.package: installed_version(cache, s.package) for s in SOURCES}
    entries, counts = _collect(cache)
    store = out / ".rendered" / str(params["max_side"])
    if record is None:
        kept = _new_split(entries, counts, params, store, jobs)
        record = split_record(kept, versions, counts, params)
        write_split_list(record, split_path)
    else: kept = _listed_split(record, entries, versions, params, store, split_path, jobs)
    manifest = {k: record[k] for k in ("params", "packages", "sources")} | {"max_side": params["max_side"],
                "files_sha256": hashlib.sha256(json.dumps(record["files"]).encode()).hexdigest()}
    materialize(out, kept, store, manifest)
    return summarize(kept, record, out, time.time() - t0)


def summarize(kept: list[dict], record: dict, out: Path, seconds: float) -> dict:
    "Counts per split and per source, the dropped counts and the wall time."
    per = {s.name: {split: n for split in SPLITS if (n := sum(e["source"] == s.name and e["split"] == split for e in kept))}
           for s in SOURCES}
    return {"out": str(out), "splits": {s: sum(e["split"] == s for e in kept) for s in SPLITS}, "per_source": per,
            "dropped": {n: {k: c[k] for k in ("too_large", "unreadable")} for n, c in record["sources"].items()},
            "skipped": {n: {k: c[k] for k in ("symlinks", "duplicates")} for n, c in record["sources"].items()},
            "seconds": round(seconds, 1)}


def _kv(d: dict) -> str:
    "`k=v k=v` of a dict."
    return " ".join(f"{k}={v}" for k, v in d.items())


def print_summary(s: dict) -> None:
    "Print the build summary in a few lines."
    print(f"dataset: {s['out']}  ({_kv(s['splits'])}; test: in-domain report split, cross: cross-domain)")
    for name, splits in s["per_source"].items():
        print(f"  {name}: {_kv(splits)}  dropped: {_kv(s['dropped'][name])}  skipped (same file): {_kv(s['skipped'][name])}")
    print(f"wall time: {s['seconds']:.1f} s")

# ---------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    "The command-line parser: fetch | build | all."
    p = argparse.ArgumentParser(prog="realart.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("fetch", "build", "all"), help="fetch: download + unpack; build: write the dataset; all: both")
    p.add_argument("--cache", help="folder of the .debs and unpacked trees (default: $MANGACOLOR_CACHE/realart or ~/.cache/manga_colorization/realart)")
    p.add_argument("--out", help="dataset folder to write (default: CACHE/dataset)")
    p.add_argument("--split-list", default=str(SPLIT_LIST), help="the split list to check against (or write) (default: %(default)s)")
    p.add_argument("--write-split", action="store_true", help="make a new split list instead of checking the existing one")
    p.add_argument("--max-pixels", type=int, help=f"drop images with more pixels (default: the split list's, else {DEFAULTS['max_pixels']})")
    p.add_argument("--max-side", type=int, help=f"longest side of the written images (default: {DEFAULTS['max_side']})")
    p.add_argument("--seed", type=int, help=f"seed of the train/val/test split (default: {DEFAULTS['seed']})")
    p.add_argument("--heldout", type=float, help=f"held-out report (test) share of the in-domain images (default: {DEFAULTS['heldout']})")
    p.add_argument("--val", type=float, help=f"model-selection (val) share of the in-domain images (default: {DEFAULTS['val']})")
    p.add_argument("--jobs", type=int, default=1, help="decoding processes (default: %(default)s)")
    return p


def main(argv: list | None = None) -> int:
    "Run the CLI; 0 on success, 2 (with one line on stderr) on a user-fixable error."
    a = parser().parse_args(argv)
    cache = cache_root(a.cache)
    out = Path(a.out).expanduser() if a.out else cache / "dataset"
    try:
        if a.command in ("fetch", "all"):
            t0 = time.time()
            print("fetched: " + ", ".join(f"{k} {v}" for k, v in fetch(cache).items()) + f" into {cache} in {time.time() - t0:.1f} s")
        if a.command in ("build", "all"):
            print_summary(build(cache, out, Path(a.split_list), a.write_split, a.jobs, max_pixels=a.max_pixels,
                                max_side=a.max_side, seed=a.seed, heldout=a.heldout, val=a.val))
    except RealArtError as e:
        print(f"realart: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
