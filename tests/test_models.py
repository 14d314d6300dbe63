"""Contracts over the registry of every network (`list_models()`: each builds, runs at 32 px, and the generators and
upscalers round-trip through their files and `runs.load_generator`), then over the colorize task (every generator
variant trains a step, takes any size, round-trips through its files), the frozen extractor, ONNX export. What
05_models shows cell by cell (seed parameter count, attention gradients, PatchGAN shape, registry errors, model
table) is tested there."""
import json

import pytest
import torch

from manga_colorization.core import UserError
from manga_colorization.models import (create_model, list_models, make_generator, model_from_state, model_task,
                                       save_generator)
from manga_colorization.runs import LoadedGenerator, load_generator

SMALL = dict(width=8, depth=5)


def small(name, **kw):
    "A tiny variant of `name` (the Danbooru extractor sees 32² inputs)."
    opts = dict(SMALL, **kw)
    if name.endswith("_ext"): opts.setdefault("ext_size", 32)
    return make_generator(name, **opts)


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("MANGACOLOR_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MANGACOLOR_OFFLINE", "1")
    torch.manual_seed(0)


TINY = {"colorize": dict(width=8, depth=5), "discriminator": dict(width=8, n_layers=2), "upscale": dict(width=8)}


def tiny(name):
    ("Network `name` of any task, small (width 8), with random weights (`pretrained=False`) and a non-zero upscaler "
     "tail.")
    task = model_task({"name": name})
    G = create_model(name, pretrained=False, **TINY[task], **({"ext_size": 32} if name.endswith("_ext") else {}))
    if task == "upscale": torch.nn.init.normal_(G.tail.weight, std=0.05)       # not plain bilinear
    return G.eval(), task


@pytest.mark.parametrize("name", list_models())
def test_every_registered_network_builds_runs_and_records_its_task(name):
    G, task = tiny(name)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        y = G(x, torch.rand(2, 3, 32, 32) * 2 - 1) if task == "discriminator" else G(x)
    shape = {"colorize": (2, 3, 32, 32), "upscale": (2, 1, 64, 64), "discriminator": (2, 1, 6, 6)}[task]
    assert y.shape == shape and torch.isfinite(y).all()
    assert G.config["name"] == name and G.config["task"] == task
    assert create_model(**G.config).config == G.config                       # the config rebuilds it
    with pytest.raises(UserError, match=f"^{task} model '{name}' has no option bogus; its options: ") as e:
        create_model(name, bogus=1)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", list_models("colorize") + list_models("upscale"))
def test_every_generator_and_upscaler_saves_and_loads_back(name, tmp_path):
    G, task = tiny(name)
    path = save_generator(G, tmp_path / "run", {"size": 32})
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad(): want = G(x)
    ckpt = {"generator": G.state_dict(), "generator_config": G.config, "meta": {"size": 32}}
    torch.save(ckpt, tmp_path / "last.pt")
    for p in (tmp_path / "run", path, tmp_path / "last.pt"):
        loaded = load_generator(p)
        assert loaded.task == loaded.meta["task"] == task and loaded.config == G.config
        with torch.no_grad(): out = loaded(x)
        # upscalers run channels_last
        assert torch.equal(out, want) if task == "colorize" else torch.allclose(out, want, atol=1e-6)


def test_unknown_model_is_one_line_listing_the_names():
    with pytest.raises(UserError,
                       match="^unknown model 'vit'; choose one of unet, unet_att, unet_ext, unet_att_ext, patchgan, "
                             "compact, rrdb$"):
        create_model("vit")
    with pytest.raises(UserError, match="^unknown upscale model 'unet'; choose one of compact, rrdb$"):
        create_model("unet", task="upscale")


@pytest.mark.parametrize("name", list_models("colorize"))
def test_forward_backward_64(name):
    G = small(name).train()
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    y = G(x)
    assert y.shape == (2, 3, 64, 64)
    assert torch.isfinite(y).all() and y.abs().max() <= 1
    (y - torch.rand_like(y)).abs().mean().backward()
    params = [p for p in G.parameters() if p.requires_grad]
    assert params and all(p.grad is not None for p in params if p is not getattr(G.attention, "gamma", None))
    assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
    opt = torch.optim.Adam(G.trainable_parameters(), lr=2e-4)
    opt.step()


@pytest.mark.parametrize("name", list_models("colorize"))
@pytest.mark.parametrize("hw", [(33, 47), (200, 300), (1, 5)])
def test_any_size_batch1_eval(name, hw):
    G = small(name).eval()
    with torch.no_grad():
        y = G(torch.rand(1, 1, *hw) * 2 - 1)
    assert y.shape == (1, 3, *hw) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", list_models("colorize"))
@pytest.mark.parametrize("upsample", ["transposed", "resize_conv"])
def test_upsample_options_and_out_ch(name, upsample):
    G = small(name, upsample=upsample, out_ch=2).eval()
    with torch.no_grad():
        assert G(torch.zeros(1, 1, 32, 48)).shape == (1, 2, 32, 48)


@pytest.mark.parametrize("name", list_models("colorize"))
def test_state_dict_round_trip(name, tmp_path):
    G = small(name).eval()
    torch.save(G.state_dict(), tmp_path / "g.pt")
    G2 = make_generator(**json.loads(json.dumps(G.config))).eval()
    G2.load_state_dict(torch.load(tmp_path / "g.pt", weights_only=True), strict=True)
    x = torch.rand(1, 1, 40, 40) * 2 - 1
    with torch.no_grad():
        assert torch.equal(G(x), G2(x))


@pytest.mark.parametrize("name", list_models("colorize"))
def test_save_load_generator(name, tmp_path):
    G = small(name).eval()
    meta = {"size": 64, "input_mode": "gray", "out_ch": 3, "color_space": "rgb"}
    path = save_generator(G, tmp_path / "run", meta)
    assert path == tmp_path / "run" / "generator.safetensors" and (tmp_path / "run" / "generator.json").is_file()
    info = json.loads((tmp_path / "run" / "generator.json").read_text())
    assert info["generator"] == G.config and info["size"] == 64
    x = torch.rand(1, 1, 37, 41) * 2 - 1
    for p in (tmp_path / "run", path, path.with_suffix(".json")):
        loaded = load_generator(p)
        assert isinstance(loaded, LoadedGenerator) and loaded.meta == {**meta, "task": "colorize"}
        assert not loaded.module.training
        with torch.no_grad():
            assert torch.equal(G(x), loaded.module(x))
            assert torch.equal(G(x), loaded(x))
    ckpt = {"generator": G.state_dict(), "generator_config": G.config, "meta": meta, "epoch": 3}
    torch.save(ckpt, tmp_path / "last.pt")
    loaded = load_generator(tmp_path / "last.pt")
    assert loaded.meta == {**meta, "task": "colorize"}
    with torch.no_grad():
        assert torch.equal(G(x), loaded.module(x))


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="nope"):
        load_generator(tmp_path / "nope")
    with pytest.raises(UserError, match="do not fit"):
        model_from_state(dict(small("unet").config, width=16), small("unet").state_dict(), "g.pt")
    save_generator(small("unet"), tmp_path / "a")
    (tmp_path / "a" / "generator.json").write_text(json.dumps({"generator": dict(small("unet").config, width=16)}))
    with pytest.raises(UserError, match="do not fit"):
        load_generator(tmp_path / "a")
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="not a training checkpoint"):
        load_generator(tmp_path / "bad.pt")


@pytest.mark.parametrize("name", ["unet_ext", "unet_att_ext"])
def test_extractor_frozen(name):
    G = small(name, ext_spatial=True).train()
    ext = G.extractor
    assert not ext.training and not any(m.training for m in ext.modules())
    assert all(not p.requires_grad for p in ext.parameters())
    ext_ids = {id(p) for p in ext.parameters()}
    assert not ext_ids & {id(p) for p in G.trainable_parameters()}
    before = {k: v.clone() for k, v in ext.state_dict().items()}
    G(torch.rand(2, 1, 64, 64) * 2 - 1).mean().backward()
    after = ext.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)     # running stats untouched
    assert all(p.grad is None for p in ext.parameters())
    assert {"mean", "std"} <= set(dict(ext.named_buffers()))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_forward_padded_exports_to_onnx_with_dynamic_size(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")

    class Core(torch.nn.Module):
        def __init__(self, G): super().__init__(); self.G = G
        def forward(self, x): return self.G.forward_padded(x)

    G = small("unet_att").eval()
    core = Core(G).eval()
    torch.onnx.export(core, (torch.zeros(1, 1, 64, 96),), str(tmp_path / "g.onnx"), input_names=["gray"],
                      output_names=["color"],
                      dynamic_axes={"gray": {0: "b", 2: "h", 3: "w"}}, opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(tmp_path / "g.onnx"))
    x = torch.rand(2, 1, 32, 128) * 2 - 1
    with torch.no_grad():
        ref = G.eval().forward_padded(x)
    out = sess.run(None, {"gray": x.numpy()})[0]
    assert out.shape == (2, 3, 32, 128) and abs(out - ref.numpy()).max() < 1e-4


def test_pad_is_centred_and_cropped_back():
    G = small("unet")
    x = torch.rand(1, 1, 20, 50)
    padded, (top, left) = G.pad(x)
    assert padded.shape[-2:] == (32, 64) and (top, left) == (6, 7)
    assert torch.equal(padded[..., top:top + 20, left:left + 50], x)


def test_pretrained_ext_file_leaves_extractor_out(tmp_path, monkeypatch):
    from manga_colorization.pretrained import danbooru_resnet50
    (tmp_path / "weights").mkdir(exist_ok=True)
    torch.save(danbooru_resnet50(pretrained=False).state_dict(), tmp_path / "weights" / "resnet50-13306192.pth")
    G = make_generator("unet_ext", pretrained=True, ext_size=32, **SMALL).eval()
    path = save_generator(G, tmp_path / "run", {"size": 64})
    from safetensors.torch import load_file
    assert not any(k.startswith("extractor.") for k in load_file(str(path)))
    G2 = load_generator(path).module
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(G(x), G2(x))
    # ... and without the weights file it cannot be rebuilt: the clear error again
    (tmp_path / "weights" / "resnet50-13306192.pth").unlink()
    with pytest.raises(UserError, match="resnet50-13306192.pth"):
        load_generator(path)


@pytest.mark.parametrize("decode", ["annealed", "shrink"])
def test_classify_head_saves_loads_and_onnx_free_decoding(decode, tmp_path):
    G = make_generator("unet", width=8, depth=3, out_ch=2, head="classify", ab_bins=6, decode=decode).train()
    y = G(torch.rand(2, 1, 24, 40) * 2 - 1)
    assert y.shape == (2, 2, 24, 40) and y.abs().max() <= 1
    # logits at half resolution, kept only in training
    assert G.final.last_logits.shape == (2, 36, 12, 20)
    assert G.config["head"] == "classify" and G.config["ab_bins"] == 6
    assert ("decode" in G.config) == (decode != "annealed")
    G.eval()
    save_generator(G, tmp_path / "run", {"size": 32, "out_ch": 2, "color_space": "lab"})
    L = load_generator(tmp_path / "run")
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad(): assert torch.allclose(L(x), G(x)) and G.final.last_logits is None
    assert make_generator("unet", width=8, depth=3,
                          out_ch=3).config.keys() == make_generator("unet", width=8, depth=3, out_ch=3,
                                                                    head="tanh").config.keys()


def test_classify_head_needs_lab_and_known_options():
    with pytest.raises(UserError, match="use out_ch=2"):
        make_generator("unet", width=8, depth=3, out_ch=3, head="classify")
    with pytest.raises(UserError, match="unknown head"):
        make_generator("unet", width=8, depth=3, out_ch=2, head="softmax")
    with pytest.raises(UserError, match="unknown decode"):
        make_generator("unet", width=8, depth=3, out_ch=2, head="classify", decode="mode")
