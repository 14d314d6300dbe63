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
    assert {"machine", "data", "inference", "train", "levers", "superres", "targets"} <= set(result)
    assert result["machine"]["cores"] >= 1 and result["quick"] is True
    for row in result["train"]:
        assert row["fast_images_per_s"] > 0 and row["plain_images_per_s"] > 0
        assert set(row["fast"]["seconds"]) == {"median", "min", "max", "n"}
    modes = {r["mode"] for r in result["inference"]}
    assert {"full-res", "raw", "network only", "whole-page network"} <= modes
    assert {r["cache"] for r in result["data"]} == {False, True}
    assert {r["arch"] for r in result["superres"]} == {"compact", "rrdb"}
    assert all(r["output_mp_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in result["superres"])
    assert "| upscaler | backend |" in r.stdout
    assert "| arch | loss |" in r.stdout and "| cache | workers |" in r.stdout

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
