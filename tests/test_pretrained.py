"""Pretrained extractors: architecture, weight resolution, offline errors, freezing. Never downloads."""
import os
import subprocess

import pytest
import torch
from torch import nn

from manga_colorization import pretrained as P


@pytest.fixture(autouse=True)
def weights_env(tmp_path, monkeypatch):
    "Every test sees empty temp weight folders and no downloads."
    monkeypatch.setenv("MANGACOLOR_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MANGACOLOR_OFFLINE", "1")
    return tmp_path


def test_missing_weights_error_names_file_url_folder(weights_env):
    with pytest.raises(P.WeightsNotFoundError) as e:
        P.danbooru_resnet50(pretrained=True)
    msg = str(e.value)
    assert "resnet50-13306192.pth" in msg and P.WEIGHTS["danbooru_resnet50"].url in msg
    assert str(weights_env / "weights") in msg
    with pytest.raises(P.WeightsNotFoundError, match="vgg16-397923af.pth"):
        P.vgg16_features(pretrained=True)


def test_no_download_under_offline(monkeypatch):
    called = []
    monkeypatch.setattr(P, "download_weights", lambda *a, **k: called.append(a))
    with pytest.raises(P.WeightsNotFoundError):
        P.resolve_weights("vgg16")
    assert not called


def test_download_failure_is_clear(weights_env, monkeypatch):
    def boom(*a, **k): raise OSError("no route to host")
    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)
    with pytest.raises(P.WeightsNotFoundError, match="download failed.*no route"):
        P.download_weights("danbooru_resnet50")


def test_danbooru_strict_load_from_random_copy(weights_env):
    net = P.danbooru_resnet50(pretrained=False)
    keys = set(net.state_dict())
    assert {"0.0.weight", "1.2.weight", "1.4.weight", "1.6.running_mean", "1.8.weight", "1.8.bias"} <= keys
    assert net[1][8].out_features == 6000 and net[1][4].in_features == 4096
    (weights_env / "weights").mkdir()
    torch.save(net.state_dict(), weights_env / "weights" / "resnet50-13306192.pth")
    loaded = P.danbooru_resnet50(pretrained=True)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # a missing key is refused with the file's name
    sd = net.state_dict(); sd.pop("1.8.bias")
    torch.save(sd, weights_env / "partial.pth")
    with pytest.raises(P.UserError, match="partial.pth"):
        P.danbooru_resnet50(path=weights_env / "partial.pth")


def test_hub_cache_is_searched_and_vgg_checksum(weights_env):
    cache = weights_env / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "vgg16-397923af.pth").write_bytes(b"junk")
    with pytest.raises(P.WeightsChecksumError, match="does not match"):
        P.resolve_weights("vgg16")


def test_vgg_truncation_normalisation_and_grad(weights_env):
    vgg = P.vgg16_features(pretrained=False)
    assert len(vgg.features.module) == 16
    x = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    feats = vgg(x)
    assert [f.shape[1] for f in feats] == [64, 128, 256]
    feats[-1].sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())
    # [-1,1] -> [0,1] -> ImageNet normalisation: a white image becomes (1-mean)/std at the first layer's input
    first = {}
    h = vgg.features.module[0].register_forward_hook(lambda m, i, o: first.update(x=i[0]))
    vgg(torch.ones(1, 3, 4, 4)); h.remove()
    expect = (1 - torch.tensor(P.IMAGENET_MEAN)) / torch.tensor(P.IMAGENET_STD)
    assert torch.allclose(first["x"][0, :, 0, 0], expect, atol=1e-6)
    # order of layers follows the request
    a, b = P.vgg16_features(("relu2_2", "relu1_2"), pretrained=False)(torch.zeros(1, 3, 8, 8))
    assert a.shape[1] == 128 and b.shape[1] == 64


def test_frozen_stays_eval():
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.5))
    outer = nn.Sequential(nn.Linear(3, 3), P.freeze(net))
    outer.train()
    assert outer.training and not net.training and not net[1].training
    assert all(not p.requires_grad for p in net.parameters())
    opt_params = [p for p in outer.parameters() if p.requires_grad]
    assert len(opt_params) == 2
    assert P.freeze(outer[1]) is outer[1]


def test_danbooru_features_frozen_and_normalised():
    fx = P.DanbooruFeatures(pretrained=False, input_size=32).train()
    assert not fx.training and not any(m.training for m in fx.modules())
    assert set(dict(fx.named_buffers())) >= {"mean", "std"}
    spatial, pooled = fx(torch.zeros(2, 1, 40, 40))
    assert spatial.shape == (2, 2048, 1, 1) and pooled.shape == (2, 512)


def test_cli_weights(weights_env):
    env = {"MANGACOLOR_WEIGHTS": str(weights_env / "weights"), "TORCH_HOME": str(weights_env / "torch"),
           "MANGACOLOR_OFFLINE": "1", "PATH": os.environ["PATH"]}
    out = subprocess.run(["mangacolor", "weights", "list"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "danbooru_resnet50" in out.stdout and "missing" in out.stdout
    out = subprocess.run(["mangacolor", "weights", "path", "vgg16"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "vgg16-397923af.pth" in out.stderr and "Traceback" not in out.stderr


def test_frozen_wrappers_report_eval_from_construction():
    "The wrappers' own `.training` flag is False right after construction, not only after `.train()`."
    assert not P.freeze(nn.Linear(3, 3)).training
    assert not P.DanbooruFeatures(pretrained=False, input_size=32).training
    assert not P.vgg16_features(("relu1_2",), pretrained=False).training
