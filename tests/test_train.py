"""Training: exact resume after SIGKILL, DDP on gloo with 2 processes, NaN handling, run folders (apart from the data;
--overwrite keeps foreign files), the demo (shrunk), --init-from, best.pt, the CUDA path's numerics (bf16 autocast +
channels_last) forced on the CPU, --precision: resolved and recorded, bf16 drift against fp32, exact resume within
bf16, a clear error without bf16."""
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from manga_colorization.core import UserError, bf16_supported, resolve_precision
from manga_colorization.models import list_models
from manga_colorization.runs import Run, load_checkpoint, load_generator
from manga_colorization.train import Trainer, TrainConfig, resume_config, train

TINY = dict(size=32, width=8, depth=3, batch_size=4, epochs=2, limit=32, val_limit=4, device="cpu", pretrained=False,
            d_width=8, d_layers=2, samples=2, tensorboard=False)

SCRIPT = """
import json, sys, time, torch
torch.set_num_threads(1)
from manga_colorization.train import Trainer, TrainConfig
cfg = TrainConfig(**json.loads(sys.argv[1]))
sleep = float(sys.argv[2]); resume = sys.argv[3] == "1"
cb = (lambda t, e: time.sleep(sleep)) if sleep > 0 else None
t = Trainer(cfg, resume=resume, callbacks=[cb] if cb else [])
t.fit()
torch.save({k: v.detach().clone() for k, v in t.G.state_dict().items()}, f"{cfg.out}/G_rank{t.setup.rank}.pt")
"""


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start(tmp_path, cfg, sleep=0.0, resume=False):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(script), json.dumps(cfg), str(sleep), "1" if resume else "0"],
                            env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(p, timeout=240):
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out
    return out


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path):
    extra = {"ckpt_every": 3, "ema": 0.9, "schedule": "linear", "grad_clip": 1.0}
    ref = {**TINY, "out": str(tmp_path / "ref"), **extra}
    killed = {**TINY, "out": str(tmp_path / "killed"), **extra}
    p_ref = _start(tmp_path, ref)
    p = _start(tmp_path, killed, sleep=0.3)
    last = Path(killed["out"]) / "checkpoints" / "last.pt"
    deadline = time.time() + 180
    while time.time() < deadline:                     # wait for a mid-epoch checkpoint in epoch 2 (step 9 of 16)
        if last.exists():
            try: state = torch.load(last, map_location="cpu", weights_only=True)
            except Exception: state = None
            if state and state["epoch"] == 1 and state["data"]["batches_done"] > 0: break
        time.sleep(0.1)
    else:
        p.kill(); pytest.fail("no mid-epoch checkpoint appeared")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    state = load_checkpoint(last)
    assert 0 < state["data"]["batches_done"] < 8 and state["step"] < 16       # it really died mid-epoch
    _finish(_start(tmp_path, killed, resume=True))
    _finish(p_ref)
    a, b = load_checkpoint(Path(ref["out"]) / "checkpoints" / "last.pt"), load_checkpoint(last)
    assert a["step"] == b["step"] == 16
    for part in ("G", "D", "ema", "generator"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for k, v in a["opt_g"]["state"].items():
        assert torch.equal(v["exp_avg"], b["opt_g"]["state"][k]["exp_avg"])
    lines = [json.loads(l) for l in (Path(killed["out"]) / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2]
    ref_lines = [json.loads(l) for l in (Path(ref["out"]) / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["psnr"] == ref_lines[-1]["psnr"]
    assert lines[-1]["loss_g"] == pytest.approx(ref_lines[-1]["loss_g"], rel=1e-9)


def test_ddp_gloo_two_processes_identical_weights(tmp_path):
    cfg = {**TINY, "out": str(tmp_path / "ddp"), "epochs": 1, "limit": 16}
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(script),
                          json.dumps(cfg), "0", "0"], env=_env(), capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    g0, g1 = (torch.load(tmp_path / "ddp" / f"G_rank{r}.pt", weights_only=True) for r in (0, 1))
    params = [k for k in g0 if "running_" not in k and "num_batches" not in k]
    assert params and all(torch.equal(g0[k], g1[k]) for k in params)
    state = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    # 16 images / (2 ranks x 4)
    assert state["step"] == 2 and state["data"]["world_size"] == 2 and len(state["rng"]) == 2
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 1                 # rank 0 alone writes


def _nan_hook(trainer, steps):
    trainer.G.register_forward_hook(lambda m, i, o: o * float("nan") if m.training and trainer.step + 1 in steps else o)
    return trainer


def test_nan_steps_skipped_then_run_stops(tmp_path):
    config = {**TINY, "epochs": 1, "limit": 16, "max_bad_steps": 3}
    t = _nan_hook(Trainer(TrainConfig(**{**config, "out": str(tmp_path / "a")})), {2, 3})
    rec = t.fit()
    assert rec["skipped_steps"] == 2
    assert all(torch.isfinite(p).all() for p in t.G.parameters())
    t = _nan_hook(Trainer(TrainConfig(**{**config, "out": str(tmp_path / "b")})), {1, 2, 3, 4})
    before = {k: v.clone() for k, v in t.G.state_dict().items()}
    with pytest.raises(UserError, match="not finite for 3 steps in a row"):
        t.fit()
    assert all(torch.equal(before[k], v) for k, v in t.G.state_dict().items()
               if "running" not in k and "num_batches" not in k)


def test_run_folder_rules_and_extension(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        Run(tmp_path / "mine").prepare()
    r = train(TrainConfig(**{**TINY, "out": str(tmp_path / "run"), "epochs": 1, "limit": 8}))
    assert r["epoch"] == 1 and r["params"] > 0
    # same kind: continued
    r = train(TrainConfig(**{**TINY, "out": str(tmp_path / "run"), "epochs": 2, "limit": 8}))
    assert r["epoch"] == 2 and r["step"] == 4
    assert [json.loads(l)["epoch"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    keys = set(json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1]))
    assert {"epoch", "step", "psnr", "ssim", "colorfulness", "delta_e", "baseline_psnr", "baseline_ssim", "loss_g",
            "loss_adv",
            "loss_l1", "loss_vgg", "loss_anime", "loss_d", "images_per_s", "time_s"} <= keys


def test_lab_outputs_and_ema(tmp_path):
    r = train(TrainConfig(**{**TINY, "out": str(tmp_path / "lab"), "epochs": 1, "limit": 8, "out_ch": 2, "ema": 0.9,
                             "schedule": "cosine", "grad_clip": 1.0}))
    assert r["baseline_psnr"] > 0 and r["psnr"] == r["psnr"]
    meta = load_generator(tmp_path / "lab").meta
    assert meta["color_space"] == "lab" and meta["out_ch"] == 2 and meta["ema"] is True


def test_demo_cli_shrunk(tmp_path, monkeypatch):
    monkeypatch.setenv("IN_TEST", "1")
    out = subprocess.run(["mangacolor", "demo", "--out", str(tmp_path / "demo")], env={**_env(), "IN_TEST": "1"},
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "copy-the-gray" in out.stdout
    names = {p.name for p in (tmp_path / "demo").iterdir()}
    assert {"checkpoints", "samples", "metrics.jsonl", "generator.safetensors", "generator.json", "page_colorized.png",
            "demo.json"} <= names
    assert (tmp_path / "demo" / "checkpoints" / "last.pt").exists()


def test_optional_metrics_plumbing(tmp_path):
    ("LPIPS/FID weights are absent here: a stand-in torchmetrics object under the name 'lpips' checks they reach the "
     "record.")
    from torchmetrics.image import StructuralSimilarityIndexMeasure
    t = Trainer(TrainConfig(**{**TINY, "out": str(tmp_path / "x"), "epochs": 1, "limit": 8}))
    t.extra_metrics = {"lpips": StructuralSimilarityIndexMeasure(data_range=1.0)}
    rec = t.fit()
    assert 0 < rec["lpips"] <= 1 and abs(rec["lpips"] - rec["ssim"]) < 1e-3


def test_frozen_nets_stay_frozen_and_out_of_the_optimizer(tmp_path):
    t = Trainer(TrainConfig(**{**TINY, "out": str(tmp_path / "f"), "arch": "unet_ext", "loss": "perceptual_anime",
                               "epochs": 1, "limit": 4, "anime_size": 32, "gen_options": {"ext_size": 32}}))
    optimised = {id(p) for g in t.step_fn.opt_g.param_groups for p in g["params"]}
    assert not any(id(p) in optimised for p in t.G.extractor.parameters())
    assert not any(id(p) in optimised for p in t.step_fn.loss.parameters())
    frozen = {k: v.clone() for k, v in t.G.extractor.state_dict().items()}
    t.fit()
    # the layers whose behaviour depends on the mode
    def leaves(m): return [x for x in m.modules() if not list(x.children())]
    layers = leaves(t.G.extractor) + leaves(t.step_fn.loss.anime.extractor) + leaves(t.step_fn.loss.vgg.extractor)
    assert not any(x.training for x in layers)
    # BatchNorm stats did not drift
    assert all(torch.equal(frozen[k], v) for k, v in t.G.extractor.state_dict().items())
    assert t.state.last_record["loss_anime"] > 0 and t.state.last_record["loss_vgg"] > 0


# ---- run folder vs data folder, --overwrite -------------------------------------------------------------------------

def _user_data(tmp_path):
    "A user's image folder that happens to have run-like names in it."
    data = tmp_path / "pages"
    (data / "samples").mkdir(parents=True)
    (data / "samples" / "page1.png").write_bytes(b"user")
    (data / "config.json").write_text('{"kind": "train"}')
    return data


@pytest.mark.parametrize("rel", [".", "run", ".."])
def test_train_refuses_out_overlapping_data(tmp_path, rel):
    from manga_colorization.cli import main
    data = _user_data(tmp_path)
    out = (data / rel) if rel != ".." else tmp_path
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UserError, match="overlap") as e:
        train(TrainConfig(**{**TINY, "data": str(data), "out": str(out), "epochs": 1, "limit": 8}), overwrite=True)
    assert "\n" not in str(e.value) and str(data) in str(e.value) and str(out) in str(e.value)
    assert main(["train", "--data", str(data), "--out", str(out), "--overwrite", "--device", "cpu"]) == 2
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before      # nothing written or removed
    assert (data / "samples" / "page1.png").read_bytes() == b"user"


def test_demo_refuses_out_overlapping_data(tmp_path):
    from manga_colorization.demo import demo
    data = _user_data(tmp_path)
    with pytest.raises(UserError, match="overlap"):
        demo(data, overwrite=True, data=str(data))
    assert (data / "samples" / "page1.png").exists() and (data / "config.json").exists()


def test_overwrite_removes_only_the_runs_own_files(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(**{**TINY, "out": str(out), "epochs": 1, "limit": 8}))
    (out / "samples" / "mine.png").write_bytes(b"user")
    (out / "checkpoints" / "notes.txt").write_text("user")
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "keep.txt").write_text("user")
    (out / "readme.txt").write_text("user")
    r = train(TrainConfig(**{**TINY, "out": str(out), "epochs": 1, "limit": 8, "seed": 1}), overwrite=True)
    assert r["epoch"] == 1 and r["step"] == 2                     # a fresh run, not a continuation
    for p in ("samples/mine.png", "checkpoints/notes.txt", "tensorboard/keep.txt", "readme.txt"):
        assert (out / p).read_text() == "user", p
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


# ---- --init-from -----------------------------------------------------------------------------------------------------

def test_init_from_starts_g_only(tmp_path):
    a = Trainer(TrainConfig(**{**TINY, "out": str(tmp_path / "a"), "epochs": 1, "limit": 8}))
    a.fit()
    g_a = {k: v.clone() for k, v in a.G.state_dict().items()}
    cfg_b = TrainConfig(**{**TINY, "out": str(tmp_path / "b"), "epochs": 1, "limit": 8, "seed": 5, "lr": 1e-3})
    fresh = Trainer(cfg_b)                                        # the same config without --init-from
    b = Trainer(dataclasses.replace(cfg_b, init_from=str(tmp_path / "a")))
    assert not all(torch.equal(g_a[k], v) for k, v in fresh.G.state_dict().items())   # the test can tell them apart
    assert g_a.keys() == b.G.state_dict().keys()
    assert all(torch.equal(g_a[k], v) for k, v in b.G.state_dict().items())
    assert all(torch.equal(fresh.D.state_dict()[k], v) for k, v in b.D.state_dict().items())          # D fresh
    assert not all(torch.equal(a.D.state_dict()[k], v) for k, v in b.D.state_dict().items())
    # optimizers fresh
    assert b.step_fn.opt_g.state_dict()["state"] == {} and b.step_fn.opt_d.state_dict()["state"] == {}
    assert b.step_fn.opt_g.param_groups[0]["lr"] == 1e-3
    assert b.state == type(b.state)()                              # counters fresh
    rec = b.fit()
    assert (rec["epoch"], rec["step"]) == (1, 2)
    # from a checkpoint file too
    c = Trainer(dataclasses.replace(cfg_b, out=str(tmp_path / "c"),
                                    init_from=str(tmp_path / "a" / "checkpoints" / "last.pt")))
    assert all(torch.equal(g_a[k], v) for k, v in c.G.state_dict().items())


@pytest.mark.parametrize("change", [{"width": 16}, {"arch": "unet_att"}, {"out_ch": 2}])
def test_init_from_mismatched_architecture(tmp_path, change):
    train(TrainConfig(**{**TINY, "out": str(tmp_path / "a"), "epochs": 1, "limit": 8}))
    with pytest.raises(UserError, match="does not fit") as e:
        Trainer(TrainConfig(**{**TINY, "out": str(tmp_path / "b"), "init_from": str(tmp_path / "a"), **change}))
    assert "\n" not in str(e.value) and str(tmp_path / "a") in str(e.value)


# ---- best.pt -----------------------------------------------------------------------------------------------------

def test_best_checkpoint_holds_the_best_epoch(tmp_path, monkeypatch):
    psnrs = iter([10.0, 30.0, 20.0])                              # epoch 2 is the best, epoch 3 worse
    import manga_colorization.train as tr
    real = tr.validate
    def fake(*a, **kw):
        metrics, shown = real(*a, **kw)
        return {**metrics, "psnr": next(psnrs)}, shown
    monkeypatch.setattr(tr, "validate", fake)
    out = tmp_path / "run"
    train(TrainConfig(**{**TINY, "out": str(out), "epochs": 3, "limit": 8, "best_metric": "psnr"}))
    best, last = load_checkpoint(out / "checkpoints" / "best.pt"), load_checkpoint(out / "checkpoints" / "last.pt")
    assert (best["epoch"], last["epoch"]) == (2, 3)
    assert best["state"]["best"] == 30.0 and best["state"]["last_record"]["psnr"] == 30.0
    assert last["state"]["last_record"]["psnr"] == 20.0
    assert not all(torch.equal(best["G"][k], v) for k, v in last["G"].items())
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(records, key=lambda r: r["psnr"])["epoch"] == best["epoch"]


# ---- the CUDA path's numerics, on the CPU ----------------------------------------------------------------------------

@pytest.mark.parametrize("arch", list_models("colorize"))
def test_bf16_autocast_channels_last_numerics(tmp_path, arch):
    ("What CUDA runs (bf16 autocast, channels_last), forced on the CPU for every generator with the perceptual_anime "
     "loss.")
    import manga_colorization.train as tr
    t = Trainer(TrainConfig(**{**TINY, "out": str(tmp_path / arch), "arch": arch, "loss": "perceptual_anime",
                               "depth": 4,
                               "epochs": 1, "limit": 8, "anime_size": 32, "gen_options": {"ext_size": 32}}))
    # autocast follows the device type: bf16 on the CPU here
    t.setup.amp, t.setup.memory_format = True, torch.channels_last
    for m in (t.G, t.D, t.step_fn.loss): m.to(memory_format=torch.channels_last)
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in t.G.parameters())
    inp, target = next(iter(t.train_loader))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # autocast really applies
        assert t.G(inp.contiguous(memory_format=torch.channels_last)).dtype == torch.bfloat16
    for _ in range(2):
        losses = t.step_fn(inp, target)
        assert losses.pop("ok") and losses and all(math.isfinite(v) for v in losses.values()), losses
    assert all(torch.isfinite(p).all() for p in t.G.parameters())
    metrics, _ = tr.validate(t.G, t.dm.val_loader, t.setup, limit=4)
    assert all(math.isfinite(metrics[k]) for k in ("psnr", "ssim", "colorfulness", "delta_e", "baseline_psnr")), metrics


class _Sentinel(Exception):
    pass


def test_ddp_cuda_sets_device_before_nccl(monkeypatch):
    import manga_colorization.train as tr
    calls = []
    monkeypatch.setenv("RANK", "1"); monkeypatch.setenv("WORLD_SIZE", "2"); monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(tr, "default_device", lambda name=None: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", str(d))))
    monkeypatch.setattr(tr.dist, "is_initialized", lambda: False)
    def init(backend, **kw):
        calls.append(("init", backend)); raise _Sentinel()
    monkeypatch.setattr(tr.dist, "init_process_group", init)
    with pytest.raises(_Sentinel):
        Trainer(TrainConfig(**{**TINY, "device": "cuda"}))
    assert calls == [("set_device", "cuda:1"), ("init", "nccl")]


@pytest.mark.parametrize("device,flag,expected", [("cuda", True, True), ("cuda", False, False), ("cpu", True, False)])
def test_cudnn_benchmark_only_on_cuda(monkeypatch, device, flag, expected):
    import manga_colorization.train as tr
    monkeypatch.setattr(tr, "default_device", lambda name=None: torch.device(device))
    monkeypatch.setattr(tr, "SketchDataModule", lambda *a, **kw: (_ for _ in ()).throw(_Sentinel()))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    with pytest.raises(_Sentinel):
        Trainer(TrainConfig(**{**TINY, "cudnn_benchmark": flag}))
    assert torch.backends.cudnn.benchmark is expected


def test_depth_help_and_any_size(tmp_path):
    "Inputs are padded to a multiple of 2**depth, so a size that is not one trains too (and the help says so)."
    import dataclasses as dc
    help_ = next(f for f in dc.fields(TrainConfig) if f.name == "depth").metadata["help"]
    assert "padded" in help_ and "must be divisible" not in help_
    r = train(TrainConfig(**{**TINY, "out": str(tmp_path / "odd"), "size": 36, "depth": 4, "epochs": 1, "limit": 4,
                             "val_limit": 2}))
    assert r["epoch"] == 1 and math.isfinite(r["psnr"])


def test_seed_recipe_resumes_exactly_with_a_partial_last_batch(tmp_path):
    ("--recipe seed (G first, last partial batch kept, no augmentation): interrupted after a checkpoint and resumed, "
     "the same weights.")
    class Stop(Exception): pass
    def stop_after(n):
        def cb(t, event):
            if event == "step" and t.step == n: raise Stop()
        return cb
    cfg = {**TINY, "recipe": "seed", "limit": 10, "ckpt_every": 2, "batch_size": 4}     # 10 images: batches of 4, 4, 2
    a = Trainer(TrainConfig(**{**cfg, "out": str(tmp_path / "a")}))
    assert (a.config.step_order, a.config.drop_last, a.config.augment,
            a.steps_per_epoch) == ("g_first", False, "none", 3)
    a.fit()
    with pytest.raises(Stop):
        Trainer(TrainConfig(**{**cfg, "out": str(tmp_path / "b")}), callbacks=[stop_after(5)]).fit()
    Trainer(TrainConfig.from_dict(json.loads((tmp_path / "b" / "config.json").read_text())), resume=True).fit()
    sa, sb = (torch.load(tmp_path / r / "checkpoints" / "last.pt", weights_only=True) for r in ("a", "b"))
    assert sa["step"] == sb["step"] == 6
    for part in ("G", "D"):
        for k in sa[part]: assert torch.equal(sa[part][k], sb[part][k]), (part, k)


def test_classification_recipe_trains_and_loads(tmp_path):
    r = train(TrainConfig(**{**TINY, "out": str(tmp_path / "cls"), "epochs": 1, "limit": 8, "out_ch": 2,
                             "pixel_loss": "classify",
                             "gen_options": {"head": "classify", "ab_bins": 8}}))
    assert math.isfinite(r["loss_l1"]) and r["loss_l1"] > 0
    G = load_generator(tmp_path / "cls")
    assert G.config["head"] == "classify" and G.config["ab_bins"] == 8
    assert G(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_best_recipe_fills_only_what_is_not_given():
    from manga_colorization.train import RECIPES, apply_recipe
    c = apply_recipe(TrainConfig(recipe="best"))
    assert all(getattr(c, k) == v for k, v in RECIPES["best"].items())
    assert apply_recipe(TrainConfig(recipe="best", out_ch=3), given={"out_ch"}).out_ch == 3
    assert dataclasses.replace(apply_recipe(TrainConfig()), recipe_applied=False) == TrainConfig()


# ---- --precision auto | fp32 | bf16 ------------------------------------------------------------------------------

BF16 = pytest.mark.skipif(not bf16_supported("cpu"),
                          reason="this CPU has no native bf16 (neither AVX-512 BF16 nor AMX): "
                                                            "bf16 would be emulated, and auto picks fp32 here")


def _floats(state: dict) -> set:
    return {v.dtype for v in state.values() if torch.is_tensor(v) and v.is_floating_point()}


def test_precision_is_resolved_and_recorded(tmp_path):
    ("config.json records the resolved precision (fp32 / bf16), never 'auto'; auto on resume keeps it; another "
     "explicit one is refused.")
    for p in ("fp32", "auto", *(("bf16",) if bf16_supported("cpu") else ())):
        out = tmp_path / p
        t = Trainer(TrainConfig(**{**TINY, "out": str(out), "precision": p, "epochs": 1, "limit": 4, "val_limit": 2}))
        t.fit()
        want = resolve_precision(p, "cpu")
        saved = json.loads((out / "config.json").read_text())["precision"]
        assert t.config.precision == t.setup.precision == saved == want and want in ("fp32", "bf16"), (p, saved)
        assert load_checkpoint(out / "checkpoints" / "last.pt")["config"]["precision"] == want
        assert resume_config(out, {"precision": "auto"}).precision == want
        with pytest.raises(UserError, match="was trained with precision="):
            resume_config(out, {"precision": {"fp32": "bf16", "bf16": "fp32"}[want]})
    # a run from before --precision: amp on the CPU meant fp32
    old = json.loads((tmp_path / "fp32" / "config.json").read_text())
    del old["precision"]
    (tmp_path / "fp32" / "config.json").write_text(json.dumps(old))
    assert resume_config(tmp_path / "fp32", {"precision": "auto"}).precision == "fp32"
    # --no-amp: fp32
    assert Trainer(TrainConfig(**{**TINY, "out": str(tmp_path / "noamp"), "amp": False})).config.precision == "fp32"


@BF16
def test_bf16_training_stays_close_to_fp32(tmp_path):
    ("Same seed, same batches: bf16 and fp32 loss curves agree within 10% after a few steps; weights, optimizer "
     "moments and "
     "checkpoint tensors stay fp32.")
    curves, trainers = {}, {}
    for p in ("fp32", "bf16"):
        t = trainers[p] = Trainer(TrainConfig(**{**TINY, "out": str(tmp_path / p), "precision": p, "limit": 48}))
        assert t.config.precision == p
        t.step_fn.G.train(); t.step_fn.D.train()
        curves[p] = [t.train_batch(inp, target) for inp, target in t.train_loader]   # 12 steps
    for key in ("loss_l1", "loss_g"):
        a, b = (torch.tensor([r[key] for r in curves[p]]) for p in ("fp32", "bf16"))
        rel = ((a - b).abs() / a.abs())
        print(key, "fp32", a.tolist(), "\nbf16", b.tolist(), "\nrelative difference", rel.tolist())
        # the same first step; then drift stays bounded
        assert rel[0] < 0.02 and rel.max() < 0.10, (key, rel.tolist())
    assert curves["bf16"][-1]["loss_l1"] < curves["bf16"][0]["loss_l1"]        # bf16 learns
    t = trainers["bf16"]
    assert _floats(t.G.state_dict()) == _floats(t.D.state_dict()) == {torch.float32}
    assert {s["exp_avg"].dtype for s in t.step_fn.opt_g.state.values()} == {torch.float32}
    t.save()
    ckpt = load_checkpoint(tmp_path / "bf16" / "checkpoints" / "last.pt")
    assert _floats(ckpt["G"]) == _floats(ckpt["D"]) == _floats(ckpt["generator"]) == {torch.float32}


@BF16
def test_bf16_resume_is_exact(tmp_path):
    ("The exact-resume check in bf16: interrupted after a checkpoint and resumed, the same weights as an uninterrupted "
     "bf16 run.")
    class Stop(Exception): pass
    def stop_after(n):
        def cb(t, event):
            if event == "step" and t.step == n: raise Stop()
        return cb
    cfg = {**TINY, "limit": 16, "ckpt_every": 2, "precision": "bf16", "ema": 0.9}
    a = Trainer(TrainConfig(**{**cfg, "out": str(tmp_path / "a")}))
    assert a.setup.precision == "bf16" and a.setup.memory_format == torch.channels_last
    a.fit()
    with pytest.raises(Stop):
        Trainer(TrainConfig(**{**cfg, "out": str(tmp_path / "b")}), callbacks=[stop_after(5)]).fit()
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["step"] == 4
    with pytest.raises(UserError, match="was trained with precision='bf16'"):            # a resume may not change it
        resume_config(tmp_path / "b", {"precision": "fp32"})
    # resumes in the recorded bf16
    r = train(TrainConfig(**{**cfg, "out": str(tmp_path / "b"), "precision": "auto"}), resume=True)
    assert r["step"] == 8 and json.loads((tmp_path / "b" / "config.json").read_text())["precision"] == "bf16"
    sa, sb = (load_checkpoint(tmp_path / r / "checkpoints" / "last.pt") for r in ("a", "b"))
    assert sa["step"] == sb["step"] == 8
    for part in ("G", "D", "ema"):
        for k in sa[part]: assert torch.equal(sa[part][k], sb[part][k]), (part, k)


def test_bf16_without_bf16_units_is_one_clear_error(tmp_path, monkeypatch, capsys):
    "--precision bf16 where the device has no bf16 units: one line naming the way out; auto falls back to fp32 there."
    import manga_colorization.core as core
    from manga_colorization.cli import main
    monkeypatch.setattr(core, "bf16_supported", lambda device: False)
    args = ["--out", str(tmp_path / "x"), "--device", "cpu", "--size", "32", "--width", "8", "--depth", "3", "--epochs",
            "1",
            "--limit", "4", "--val-limit", "2", "--batch-size", "4", "--no-pretrained", "--no-tensorboard"]
    assert main(["train", *args, "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no bf16 support" in err and "--precision fp32" in err, err
    assert resolve_precision("auto", "cpu") == "fp32"
    # sr-train alike
    assert main(["sr-train", "--out", str(tmp_path / "sr"), "--device", "cpu", "--precision", "bf16"]) == 2
    assert "no bf16 support" in capsys.readouterr().err


# ---- a guidance's defaults (GUIDANCE_DEFAULTS) ------------------------------------------------------------------

TINY_CLI = ["--size", "32", "--width", "8", "--depth", "3", "--batch-size", "4", "--limit", "8", "--val-limit", "4",
            "--device", "cpu", "--no-pretrained", "--d-width", "8", "--d-layers", "2", "--samples", "2",
            "--no-tensorboard"]


def _train_cli(argv):
    from contextlib import redirect_stderr, redirect_stdout
    import io
    from manga_colorization.cli import main
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        rc = main(["train", *map(str, argv)])
    assert rc == 0, err.getvalue()[-2000:]


def _g_state(out) -> dict:
    return load_checkpoint(Path(out) / "checkpoints" / "last.pt")["G"]


def test_guided_run_gets_the_measured_recipe_by_default(tmp_path):
    ("A fresh `--guidance hints` run trains the README's recipe (GroupNorm, the spread as input and residual, Lab "
     "chroma, every hue turned, 48 hints on average and up to 256, no adversarial term) and config.json records it.")
    out = tmp_path / "hints"
    _train_cli(["--out", out, "--guidance", "hints", "--epochs", 1, *TINY_CLI])
    c = Run(out).config
    assert c["gen_options"] == {"norm": "group", "hint_spread": True, "hint_residual": True}
    assert (c["out_ch"], c["hue_rotate"], c["hint_mean"], c["hint_pyramid"]) == (2, 1.0, 48.0, True)
    assert (c["hint_max"], c["adv_weight"]) == (256, 0.0)
    G = load_generator(out)
    assert (G.config["norm"], G.config["hint_spread"], G.config["hint_residual"], G.config["out_ch"]) == \
        ("group", True, True, 2)
    assert isinstance(G.module.downs[1][1], torch.nn.GroupNorm)


def test_explicit_flags_beat_the_guided_defaults():
    from manga_colorization.cli import build_parser
    from manga_colorization.train import TrainConfig, apply_recipe, given_options
    args = build_parser().parse_args(["train", "--guidance", "hints", "--hue-rotate", "0", "--hint-mean", "8",
                                      "--out-ch", "3", "--gen-options", '{"norm": "batch"}'])
    given = given_options(args)
    c = apply_recipe(TrainConfig(**given), given)
    assert (c.out_ch, c.hue_rotate, c.hint_mean) == (3, 0.0, 8.0)
    # your keys win; the spread stays, its residual needs Lab chroma
    assert c.gen_options == {"norm": "batch", "hint_spread": True, "hint_residual": False}
    args = build_parser().parse_args(["train", "--guidance", "both", "--palette-none", "0.25"])
    c = apply_recipe(TrainConfig(**given_options(args)), given_options(args))
    assert (c.palette_none, c.hint_mean, c.out_ch, c.gen_options) == (0.25, 16.0, 2, None)
    # unguided: today's defaults exactly
    args = build_parser().parse_args(["train"])
    c = apply_recipe(TrainConfig(**given_options(args)), given_options(args))
    assert dataclasses.replace(c, recipe_applied=False) == TrainConfig()


def test_train_help_says_the_guided_defaults(capsys):
    from manga_colorization.cli import main
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for says in ("(default: 3; with any --guidance: 2)", "(default: None; with any --guidance: 1.0)",
                 "(default: 8.0; with --guidance hints: 48.0; with --guidance both, reference_hints: 16.0)",
                 "(default: 50; with --guidance hints: 256)",
                 "(default: 0.25; with --guidance both: 0.5)",
                 'with --guidance hints: {"norm": "group", "hint_spread": true, "hint_residual": true}'):
        assert says in text, says


def test_an_old_hints_run_resumes_as_it_was(tmp_path):
    ("A hints run stored before the guided defaults (BatchNorm, no spread, RGB, hue_rotate 0, hint_mean 8) resumes "
     "with its own settings: config and generator unchanged, one more epoch trained.")
    out = tmp_path / "old"
    old = TrainConfig(**{**TINY, "out": str(out), "epochs": 1, "limit": 8, "guidance": "hints", "hue_rotate": 0.0,
                         "hint_mean": 8.0, "out_ch": 3, "gen_options": None, "recipe_applied": True})
    train(old)
    saved = Run(out).config
    # as such a run stored it: without the fields of later versions
    (out / "config.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "precision"}))
    before = _g_state(out)
    _train_cli(["--out", out, "--guidance", "hints", "--epochs", 2, "--resume", *TINY_CLI])
    after = Run(out).config
    assert {k: after[k] for k in after if k != "epochs" and k != "precision"} == \
        {k: saved[k] for k in saved if k != "epochs" and k != "precision"}
    assert (after["gen_options"], after["out_ch"], after["hue_rotate"], after["hint_mean"]) == (None, 3, 0.0, 8.0)
    assert after["epochs"] == 2 and len(Run(out).metrics()) == 2
    state = _g_state(out)
    assert state.keys() == before.keys() and all(state[k].shape == before[k].shape for k in state)
    assert any(not torch.equal(state[k], before[k]) for k in state)      # it trained on
    G = load_generator(out)
    assert (G.config.get("norm", "batch"), G.config.get("hint_spread", False), G.config["out_ch"]) == \
        ("batch", False, 3)
    assert isinstance(G.module.downs[1][1], torch.nn.BatchNorm2d)
