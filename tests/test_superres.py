"""`mangacolor sr-train / upscale / sr-export` as a user runs them, with tiny upscalers of both kinds: pages, folders
and CBZ upscaled with colorize's guarantees, ONNX export, training with exact resume. (The networks, degradations,
tiling and measurements are tested in nbs/12_superres.ipynb.)"""
import contextlib
import dataclasses
import io
import json
import re
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from manga_colorization.cli import main
from manga_colorization.models import create_model, list_models, make_generator, save_generator
from manga_colorization.superres import Upscaler, upscale_tensor
from manga_colorization.synthetic import synth_page
from manga_colorization.superres import SRConfig
from manga_colorization.train import BaseTrainConfig, Trainer, TrainConfig

TINY = {"compact": dict(width=4, n_conv=1), "rrdb": dict(width=4, growth=2, n_blocks=1)}


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def upscaler_run(folder, arch="compact", scale=2, in_ch=1):
    torch.manual_seed(0)
    G = create_model(arch, scale=scale, in_ch=in_ch, **TINY[arch])
    torch.nn.init.normal_(G.tail.weight, std=0.05)          # not plain bilinear
    save_generator(G, folder, {"task": "sr", "scale": scale, "pad_multiple": 1})
    return folder


def page(k, size=(40, 30), mode="L"):
    return synth_page(k, 0, size).color.convert(mode)


@pytest.fixture
def inputs(tmp_path):
    src = tmp_path / "in"
    (src / "chapter").mkdir(parents=True)
    page(0).save(src / "single.png")
    page(1, mode="RGB").save(src / "chapter" / "p1.png")
    page(2).save(src / "chapter" / "p2.jpg")
    (src / "chapter" / ".hidden.png").write_bytes(b"x")
    with zipfile.ZipFile(src / "book.cbz", "w") as z:
        for k in (3, 1, 2):
            buf = io.BytesIO(); page(k).save(buf, "PNG"); z.writestr(f"{k:02d}.png", buf.getvalue())
        z.writestr("ComicInfo.xml", "<ComicInfo/>")
    return src


@pytest.mark.parametrize("arch", list_models("upscale"))
def test_upscale_files_folders_and_cbz(tmp_path, inputs, arch):
    run = upscaler_run(tmp_path / "run", arch)
    out = tmp_path / "out"
    code, stdout, err = cli("upscale", inputs / "single.png", inputs / "chapter", inputs / "book.cbz", "--checkpoint",
                            run, "--out", out, "--tile", 16, "--overlap", 4)
    assert code == 0, err
    assert "6 page(s): 6 upscaled" in stdout
    assert Image.open(out / "single.png").size == (80, 60) and Image.open(out / "single.png").mode == "L"
    assert Image.open(out / "chapter" / "p1.png").mode == "RGB"
    assert Image.open(out / "chapter" / "p2.jpg").size == (80, 60)
    assert not (out / "chapter" / ".hidden.png").exists()
    with zipfile.ZipFile(out / "book.cbz") as z:
        assert z.namelist() == ["03.png", "01.png", "02.png", "ComicInfo.xml"]
        assert Image.open(io.BytesIO(z.read("01.png"))).size == (80, 60)
    code, stdout, _ = cli("upscale", inputs / "single.png", "--checkpoint", run, "--out", out)
    assert code == 0 and "1 skipped" in stdout                 # never overwritten without --overwrite
    code, _, err = cli("upscale", inputs / "single.png", "--checkpoint", run, "--out", out, "--scale", "1.5",
                       "--overwrite")
    assert code == 0 and Image.open(out / "single.png").size == (60, 45)


def test_upscale_refuses_and_counts(tmp_path, inputs):
    run = upscaler_run(tmp_path / "run")
    code, _, err = cli("upscale", inputs / "chapter", "--checkpoint", run, "--out", inputs)
    assert code == 2 and "is inside --out" in err                # outputs are never written over inputs
    code, _, err = cli("upscale", inputs / "single.png", "--checkpoint", run, "--out", tmp_path / "o", "--scale", "4")
    assert code == 2 and "enlarges x2" in err and err.count("\n") == 1
    colorizer = tmp_path / "colorizer"
    save_generator(make_generator("unet", width=4, depth=3), colorizer, {"size": 32})
    code, _, err = cli("upscale", inputs / "single.png", "--checkpoint", colorizer, "--out", tmp_path / "o")
    assert code == 2 and "not an upscaler" in err
    (inputs / "chapter" / "broken.png").write_bytes(b"not a png")
    code, stdout, err = cli("upscale", inputs / "chapter", "--checkpoint", run, "--out", tmp_path / "o2")
    assert code == 1 and "1 failed" in stdout and "1 of 3 pages failed" in err


def test_export_onnx_and_both_backends(tmp_path, inputs):
    pytest.importorskip("onnxruntime")
    run = upscaler_run(tmp_path / "run", "rrdb")
    onnx = tmp_path / "up.onnx"
    code, _, err = cli("sr-export", "--checkpoint", run, "--out", onnx)
    assert code == 0 and onnx.exists() and onnx.with_suffix(".json").exists(), err
    code, _, err = cli("sr-export", "--checkpoint", run, "--out", run / "generator.onnx")
    assert code == 2 and "would overwrite" in err
    outs = {}
    for name, args in {"torch": ["--checkpoint", run], "onnx": ["--checkpoint", run, "--backend", "onnx"],
                       "file": ["--checkpoint", onnx]}.items():
        code, _, err = cli("upscale", inputs / "single.png", *args, "--out", tmp_path / name, "--tile", 16, "--overlap",
                           4)
        assert code == 0, err
        outs[name] = np.asarray(Image.open(tmp_path / name / "single.png"), int)
    assert np.abs(outs["torch"] - outs["onnx"]).max() <= 1 and np.abs(outs["torch"] - outs["file"]).max() <= 1


@pytest.mark.parametrize("arch", list_models("upscale"))
def test_older_upscaler_files_keep_the_bilinear_skip(tmp_path, arch):
    "A generator.json written before the `skip` option (no such key) loads as the bilinear-skip net it was trained as."
    run = upscaler_run(tmp_path / "run", arch)
    meta = json.loads((run / "generator.json").read_text())
    del meta["generator"]["skip"]
    (run / "generator.json").write_text(json.dumps(meta))
    G = Upscaler(run, precision="fp32").G.module
    assert G.config.get("skip", "bilinear") == "bilinear"
    old = create_model(arch, scale=2, skip="bilinear", **TINY[arch]).eval()
    old.load_state_dict(G.state_dict())
    x = torch.rand(1, 1, 12, 10) * 2 - 1
    with torch.no_grad(): assert (G(x) - old(x)).abs().max() < 1e-5


def test_lanczos_skip_exports_and_tiles(tmp_path):
    "The Lanczos skip (the default of new runs) runs the same through ONNX and through tiles."
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    G = create_model("compact", scale=2, skip="lanczos", **TINY["compact"]).eval()
    torch.nn.init.normal_(G.tail.weight, std=0.05)
    save_generator(G, tmp_path / "run", {"task": "sr", "scale": 2, "pad_multiple": 1})
    assert cli("sr-export", "--checkpoint", tmp_path / "run", "--out", tmp_path / "up.onnx")[0] == 0
    x = torch.rand(1, 50, 70) * 2 - 1
    run = lambda t: G(t).detach()
    whole, tiled = upscale_tensor(run, x, 2, tile=512), upscale_tensor(run, x, 2, tile=24, overlap=8, pad=16)
    assert (tiled - whole).abs().max() / 2 < 1 / 255
    import onnxruntime as ort
    sess = ort.InferenceSession(str(tmp_path / "up.onnx"))
    by_onnx = sess.run(None, {sess.get_inputs()[0].name: x[None].numpy()})[0]
    assert np.abs(by_onnx - whole[None].numpy()).max() < 1e-4


@pytest.mark.parametrize("arch", list_models("upscale"))
def test_tiled_equals_untiled(arch):
    torch.manual_seed(0)
    G = create_model(arch, scale=2, **TINY[arch]).eval()
    torch.nn.init.normal_(G.tail.weight, std=0.05)
    x = torch.rand(1, 70, 90) * 2 - 1
    run = lambda t: G(t).detach()
    whole, tiled = upscale_tensor(run, x, 2, tile=512), upscale_tensor(run, x, 2, tile=24, overlap=8, pad=16)
    assert (tiled - whole).abs().max() / 2 < 1 / 255


needs_hooks = pytest.mark.skipif(not hasattr(Trainer, "make_step"),
                                 reason="train.Trainer has no task hooks (make_step, make_data) yet")


def sr_train(out, *extra):
    return cli("sr-train", "--data", "synthetic", "--out", out, "--size", 32, "--batch-size", 2, "--limit", 4,
               "--val-limit", 2,
               "--samples", 2, "--device", "cpu", "--no-tensorboard", "--seed", 3, *extra)


@needs_hooks
@pytest.mark.parametrize("arch", list_models("upscale"))
def test_sr_train_resume_and_upscale(tmp_path, inputs, arch):
    opts = ["--arch", arch, "--width", 4]
    straight, split = tmp_path / "straight", tmp_path / "split"
    code, _, err = sr_train(straight, *opts, "--epochs", 2)
    assert code == 0, err[-2000:]
    for f in ("config.json", "metrics.jsonl", "generator.safetensors", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (straight / f).exists(), f
    assert len((straight / "metrics.jsonl").read_text().splitlines()) == 2 and list((straight / "samples").iterdir())
    assert sr_train(split, *opts, "--epochs", 1)[0] == 0
    # runs of older versions saved the colorizer's fields too
    config = json.loads((split / "config.json").read_text())
    older = {**TrainConfig().to_dict(), **config, "recipe_applied": True, "guidance": "both"}
    (split / "config.json").write_text(json.dumps(older))
    code, _, err = sr_train(split, *opts, "--epochs", 2, "--resume")
    assert code == 0, err[-2000:]
    a, b = (Upscaler(p).G.module.state_dict() for p in (straight, split))
    assert all(torch.equal(a[k], b[k]) for k in a)               # exact resume
    code, _, err = cli("upscale", inputs / "single.png", "--checkpoint", straight, "--out", tmp_path / "o")
    assert code == 0 and Image.open(tmp_path / "o" / "single.png").size == (80, 60), err


@needs_hooks
def test_sr_train_resumes_an_older_run_with_its_bilinear_skip(tmp_path):
    "A run whose config.json predates `--skip` resumes as the bilinear-skip net it started as; new runs get Lanczos."
    run = tmp_path / "old"
    assert sr_train(run, "--width", 4, "--epochs", 1, "--skip", "bilinear")[0] == 0
    config = json.loads((run / "config.json").read_text())
    del config["skip"]
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = sr_train(run, "--width", 4, "--epochs", 2, "--resume")
    assert code == 0, err[-2000:]
    assert Upscaler(run).G.config["skip"] == "bilinear"
    assert sr_train(tmp_path / "new", "--width", 4, "--epochs", 1)[0] == 0
    assert Upscaler(tmp_path / "new").G.config["skip"] == "lanczos"


def test_colorize_upscale_paints_at_the_new_resolution(tmp_path):
    "`mangacolor colorize --upscale RUN` enlarges each page with the upscaler, then colorizes it at the new size."
    import contextlib, io
    import numpy as np
    from PIL import Image
    from manga_colorization.cli import main
    from manga_colorization.models import make_generator, save_generator
    save_generator(create_model("compact", scale=2, width=4), tmp_path / "sr",
                   {"task": "sr", "scale": 2, "pad_multiple": 1})
    save_generator(make_generator("unet", width=4, depth=3, out_ch=2), tmp_path / "col",
                   {"size": 32, "input_mode": "gray", "out_ch": 2})
    page = tmp_path / "in" / "p.png"; page.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8)).save(page)
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["colorize", str(page), "--checkpoint", str(tmp_path / "col"), "--upscale", str(tmp_path / "sr"),
                     "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert Image.open(tmp_path / "out" / "p.png").size == (60, 80)


def help_flags(command) -> tuple[set, str]:
    "The options `mangacolor COMMAND --help` lists (`--x, --no-x`: --x), and the whole text."
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit): main([command, "--help"])
    return set(re.findall(r"^  (--[a-z0-9-]+)", out.getvalue(), re.M)), out.getvalue()


def flags(names) -> set:
    return {"--" + n.replace("_", "-") for n in names}


def test_sr_train_help_lists_only_upscaler_options():
    "sr-train: the shared training options and the upscaler's; none of the colorizer's (guidance, palettes, ...)."
    got, text = help_flags("sr-train")
    base, colorizer = ({f.name for f in dataclasses.fields(c)} for c in (BaseTrainConfig, TrainConfig))
    colorizer -= base
    assert not got & flags(colorizer), sorted(got & flags(colorizer))
    for flag in ("--guidance", "--palette-k", "--hue-rotate", "--seed-defects", "--pixel-loss", "--recipe", "--depth",
                 "--out-ch", "--input-mode", "--best-metric", "--step-order", "--layout", "--hint-none", "--val-hints"):
        assert flag in flags(colorizer) and flag not in got, flag
    assert got == flags(f.name for f in dataclasses.fields(SRConfig) if f.name != "kind") | {"--resume", "--overwrite"}
    assert {"--scale", "--in-ch", "--kernels", "--tone", "--blur", "--noise", "--jpeg"} <= got   # the upscaler's
    shared = {"--data", "--out", "--epochs", "--batch-size", "--lr", "--schedule", "--device", "--num-workers",
              "--seed", "--ema", "--grad-clip", "--ckpt-every", "--compile", "--tensorboard", "--max-bad-steps",
              "--init-from"}
    assert shared <= got
    assert "upscaler: compact | rrdb" in text and "unet" not in text   # --arch/--loss: the upscaler's choices


def test_train_help_is_one_flag_per_train_config_field():
    got, _ = help_flags("train")
    fields = [f.name for f in dataclasses.fields(TrainConfig)
              if f.name != "kind" and f.metadata.get("cli") is not False]
    assert got == flags(fields) | {"--resume", "--overwrite"}
    assert len(got) == 75 and {"--guidance", "--palette-k", "--hue-rotate", "--seed-defects", "--arch", "--loss",
                               "--reference-groups", "--reference-match"} <= got
