"""`mangacolor bench` as a user runs it: the quick smoke run writes a complete JSON; the JSON is never written over by
accident; its fresh-process measurements are functions of the module, run with `python -m` (no code held in strings).
(`bench`'s functions, targets and fresh-process measurements are tested in nbs/18c_bench.ipynb.)"""
import json
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "manga_colorization"


def run(*args):
    return subprocess.run(["mangacolor", "bench", *args], capture_output=True, text=True, timeout=600)


def test_quick_bench_writes_every_section(tmp_path):
    out = tmp_path / "b.json"
    r = run("--quick", "--json", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert {"machine", "data", "inference", "train", "levers", "precision", "superres", "targets"} <= set(result)
    assert result["machine"]["cores"] >= 1 and result["quick"] is True
    for row in result["train"]:                        # side by side with the real peer, pix2pix's reference step
        assert row["library_images_per_s"] > 0 and row["peer_images_per_s"] > 0 and row["ratio"] > 0
        assert row["peer"].startswith("pix2pix reference step") and "100*L1" in row["peer"]
        assert set(row["library"]["seconds"]) == {"median", "min", "max", "n"} == set(row["peer_step"]["seconds"])
    assert any("pix2pix" in t["target"] for t in result["targets"])
    precision = result["precision"]                    # fp32 vs bf16: the default UNet's training step, and a page
    assert set(precision) == {"train_step", "page"}
    for p in precision.values():
        assert p["fp32_s"] > 0
        if result["machine"]["cpu_bf16"]:
            assert set(p) == {"fp32_s", "bf16_s", "ratio"} and p["bf16_s"] > 0
            assert abs(p["ratio"] - p["fp32_s"] / p["bf16_s"]) < 0.01 * p["ratio"]
        else:
            assert p == {"fp32_s": p["fp32_s"], "bf16_s": None, "ratio": None, "skipped": "no bf16 units"}
    assert set(result["machine"]["cpu_bf16_flags"]) <= {"amx_bf16", "amx_tile", "avx512_bf16"}
    modes = {r["mode"] for r in result["inference"]}
    assert {"full-res", "raw", "network only", "whole-page network"} <= modes
    assert {r["cache"] for r in result["data"]} == {False, True}
    assert {r["arch"] for r in result["superres"]} == {"compact", "rrdb"}
    assert all(r["output_mp_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in result["superres"])
    assert "| upscaler | backend |" in r.stdout
    assert "| arch | loss |" in r.stdout and "| cache | workers |" in r.stdout
    assert "images/s (pix2pix)" in r.stdout and "| fp32 vs bf16 autocast + channels_last |" in r.stdout

    again = run("--quick", "--json", str(out), "--sections", "data")
    assert again.returncode == 2 and "exists" in again.stderr and again.stderr.count("\n") == 1
    assert json.loads(out.read_text()) == result          # not written over


def test_bad_section_is_refused():
    r = run("--sections", "gpu")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_child_entry_names_its_commands():
    r = subprocess.run([sys.executable, "-m", "manga_colorization.experiments.bench"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "page-memory,page,superres" in r.stderr and r.stdout == ""
