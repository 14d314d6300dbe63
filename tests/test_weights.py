"""Shipped models (issue 23, "a model that ships"): `mangacolor weights export` makes NAME.safetensors (fp16, config in
its metadata, at most 12 MB) + NAME.md from a run, `weights list` (text and --json) shows them, `colorize --reference`,
`upscale` and `HintEditor(page)` use the shipped defaults without --checkpoint, a missing model is one line, and the
package installs the folder. Every test works in a temp folder named by $MANGACOLOR_SHIPPED, never inside the
package."""
import configparser
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from manga_colorization import runs
from manga_colorization.cli import main
from manga_colorization.colorize import Colorizer
from manga_colorization.core import UserError
from manga_colorization.models import create_model, make_generator, save_generator
from manga_colorization.runs import (
    DEFAULT_REFERENCE_MODEL,
    DEFAULT_UPSCALER,
    SHIPPED_ENV,
    export_shipped,
    load_generator,
    shipped_dir,
    shipped_path,
    shipped_weights,
)

ROOT = Path(__file__).resolve().parents[1]
META = {"size": 32, "input_mode": "gray", "out_ch": 2, "color_space": "lab"}


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err): rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    "A tiny reference_hints generator and a tiny x2 upscaler saved as runs (fp32), a card, a page and a reference."
    root = tmp_path_factory.mktemp("made")
    torch.manual_seed(0)
    G = make_generator("unet", width=8, depth=3, out_ch=2, guidance="reference_hints", norm="group",
                       reference_transfer=True, reference_residual=True, hint_spread=True, hint_residual=True)
    save_generator(G, root / "ref", META)
    U = create_model("compact", scale=2, width=8, n_conv=1)
    torch.nn.init.normal_(U.tail.weight, std=0.05)                       # not plain bilinear
    save_generator(U, root / "sr", {"task": "sr", "scale": 2, "pad_multiple": 1})
    (root / "card.md").write_text("# Tiny reference + hints colorizer\n\nData: synthetic pages (CC0). 8 images.\n")
    (root / "upcard.md").write_text("\n## Tiny x2 upscaler\n")
    Image.fromarray((np.indices((48, 40)).sum(0) * 3 % 200 + 30).astype(np.uint8)).save(root / "page.png")
    ref = Image.new("RGB", (40, 40), (200, 40, 40)); ref.paste((40, 60, 200), (0, 0, 40, 16))
    ref.save(root / "red.png")
    return root


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    "An empty shipped-models folder for this test."
    monkeypatch.setenv(SHIPPED_ENV, str(tmp_path / "shipped"))
    return tmp_path / "shipped"


@pytest.fixture
def both(made, shipped):
    "Both tiny models shipped under their default names (through the command line)."
    for run, name, card in (("ref", DEFAULT_REFERENCE_MODEL, "card.md"), ("sr", DEFAULT_UPSCALER, "upcard.md")):
        rc, out, err = cli("weights", "export", made / run, "--name", name, "--card", made / card)
        assert rc == 0, err
        assert out.startswith(f"wrote {shipped / name}.safetensors (") and "fp16" in out
    return shipped


def test_export_writes_fp16_with_config_and_the_card(made, both):
    from safetensors import safe_open
    f = both / f"{DEFAULT_REFERENCE_MODEL}.safetensors"
    want = [f.name, f"{DEFAULT_REFERENCE_MODEL}.md", f"{DEFAULT_UPSCALER}.safetensors", f"{DEFAULT_UPSCALER}.md"]
    assert sorted(p.name for p in both.iterdir()) == sorted(want)
    with safe_open(str(f), "pt") as st:
        info = json.loads(st.metadata()["mangacolor"])
        dtypes = {st.get_tensor(k).dtype for k in st.keys()}  # noqa: SIM118 (safe_open is no dict)
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    assert info["generator"]["guidance"] == "reference_hints" and info["size"] == 32 and info["dtype"] == "float16"
    assert (both / f"{DEFAULT_REFERENCE_MODEL}.md").read_text() == (made / "card.md").read_text()
    assert not (both / f"{DEFAULT_REFERENCE_MODEL}.json").exists()          # one file: the config travels inside


def test_fp16_round_trip_loads_fp32_within_tolerance(made, both):
    x = torch.rand(2, 1, 40, 24) * 2 - 1
    hints = torch.zeros(1, 3, 40, 24); hints[0, :, 5:9, 4:8] = torch.tensor([0.4, -0.3, 1.0]).view(3, 1, 1)
    reference = torch.rand(1, 3, 32, 32) * 2 - 1
    full, half = load_generator(made / "ref"), load_generator(shipped_path(DEFAULT_REFERENCE_MODEL))
    assert {v.dtype for v in half.module.state_dict().values() if v.is_floating_point()} == {torch.float32}
    assert half.config == full.config and half.meta["size"] == full.meta["size"] == 32
    a, b = full(x, hints, reference=reference), half(x, hints, reference=reference)
    assert b.dtype == torch.float32 and (a - b).abs().max() < 2e-2 and not torch.equal(a, b)
    up_full, up_half = load_generator(made / "sr"), load_generator(shipped_path(DEFAULT_UPSCALER))
    y = torch.rand(1, 1, 21, 17) * 2 - 1
    assert up_half.task == "upscale" and (up_full(y) - up_half(y)).abs().max() < 1e-2


def test_list_text_and_json(both):
    rc, out, err = cli("weights", "list")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f"shipped models in {both}:"
    ref, up = lines[1].split(), lines[2].split()
    assert ref[:4] == [DEFAULT_REFERENCE_MODEL, "colorize", "guidance", "reference_hints"]
    assert up[:5] == [DEFAULT_UPSCALER, "upscale", "guidance", "-", "x2"] and "MB" in up and "params" in up
    assert lines[1].endswith("Tiny reference + hints colorizer") and lines[2].endswith("Tiny x2 upscaler")
    assert "danbooru_resnet50" in out                                           # the pretrained inputs still listed
    rc, out, _ = cli("weights", "list", "--json")
    rows = json.loads(out)
    assert rc == 0 and [r["name"] for r in rows] == [DEFAULT_REFERENCE_MODEL, DEFAULT_UPSCALER]
    assert {k for r in rows for k in r} >= {"name", "task", "guidance", "scale", "size_mb", "params", "card", "path"}
    assert [(r["task"], r["guidance"], r["scale"]) for r in rows] == [("colorize", "reference_hints", 1),
                                                                     ("upscale", None, 2)]
    assert rows == shipped_weights() and all(0 < r["size_mb"] < 1 and r["params"] > 0 for r in rows), rows


def test_list_without_shipped_models_is_one_line(shipped):
    rc, out, err = cli("weights", "list")
    assert rc == 0, err
    assert out.splitlines()[0] == (f"no shipped models in {shipped} (make one: mangacolor weights export RUN "
                                   "--name NAME --card CARD.md)")
    assert not out.splitlines()[1].startswith(("reference", "upscale"))
    rc, out, _ = cli("weights", "list", "--json")
    assert rc == 0 and json.loads(out) == []


def test_colorize_with_reference_and_no_checkpoint_uses_the_shipped_model(made, both, tmp_path):
    rc, _, err = cli("colorize", made / "page.png", "--reference", made / "red.png", "--out", tmp_path / "o",
                       "--device", "cpu", "--no-keep-white")
    assert rc == 0, err
    rc, _, err = cli("colorize", made / "page.png", "--reference", made / "red.png", "--out", tmp_path / "full",
                     "--device", "cpu", "--no-keep-white", "--checkpoint", made / "ref")
    assert rc == 0, err
    shipped_page = np.asarray(Image.open(tmp_path / "o" / "page.png").convert("RGB"), np.float32)
    full_page = np.asarray(Image.open(tmp_path / "full" / "page.png").convert("RGB"), np.float32)
    assert np.abs(shipped_page - full_page).max() <= 2                     # fp16 weights: within rounding
    api = Colorizer.shipped(device="cpu", keep_white=False).colorize(made / "page.png", reference=made / "red.png")
    assert np.abs(np.asarray(api, np.float32) - shipped_page).max() <= 1
    hints = tmp_path / "h.hints.json"
    hints.write_text(json.dumps({"points": [{"x": 10, "y": 10, "color": "#20c020", "radius": 4}]}))
    rc, _, err = cli("colorize", made / "page.png", "--reference", made / "red.png", "--hints", hints, "--out",
                     tmp_path / "oh", "--device", "cpu", "--no-keep-white")
    assert rc == 0, err


def test_colorize_without_reference_or_checkpoint_asks_for_one(made, both, tmp_path):
    rc, _, err = cli("colorize", made / "page.png", "--out", tmp_path / "o")
    assert rc == 2 and one_line(err), err
    assert "--checkpoint is required" in err and "--reference IMG alone" in err and DEFAULT_REFERENCE_MODEL in err
    assert not (tmp_path / "o").exists()


def test_upscale_without_checkpoint_uses_the_shipped_upscaler(made, both, tmp_path):
    rc, _, err = cli("upscale", made / "page.png", "--out", tmp_path / "o")
    assert rc == 0, err
    rc, _, err = cli("upscale", made / "page.png", "--out", tmp_path / "full", "--checkpoint", made / "sr")
    assert rc == 0, err
    a = np.asarray(Image.open(tmp_path / "o" / "page.png"), np.float32)
    b = np.asarray(Image.open(tmp_path / "full" / "page.png"), np.float32)
    assert a.shape == (96, 80) and np.abs(a - b).max() <= 2


def test_a_missing_shipped_model_is_one_line(made, shipped, tmp_path):
    for argv in (("colorize", made / "page.png", "--reference", made / "red.png", "--out", tmp_path / "o"),
                 ("upscale", made / "page.png", "--out", tmp_path / "u")):
        rc, _, err = cli(*argv)
        assert rc == 2 and one_line(err), err
        assert "no shipped model" in err and "mangacolor weights list" in err
    with pytest.raises(UserError, match=f"no shipped model '{DEFAULT_UPSCALER}'.*mangacolor weights list"):
        shipped_path(DEFAULT_UPSCALER)
    with pytest.raises(UserError, match="no shipped model 'nope'"): Colorizer.shipped("nope")


def test_overwrite_is_refused_without_the_flag(made, both):
    card = both / f"{DEFAULT_UPSCALER}.md"
    rc, _, err = cli("weights", "export", made / "sr", "--name", DEFAULT_UPSCALER, "--card", made / "card.md")
    assert rc == 2 and one_line(err) and "exists" in err and "--overwrite" in err, err
    assert card.read_text() == (made / "upcard.md").read_text()
    rc, _, err = cli("weights", "export", made / "sr", "--name", DEFAULT_UPSCALER, "--card", made / "card.md",
                     "--overwrite")
    assert rc == 0, err
    assert card.read_text() == (made / "card.md").read_text()


def test_size_cap_is_one_line_with_the_size(tmp_path, shipped, made):
    torch.manual_seed(0)
    save_generator(make_generator("unet", width=32, depth=6, out_ch=2), tmp_path / "big", META)  # 7.3 M params
    rc, _, err = cli("weights", "export", tmp_path / "big", "--name", "big", "--card", made / "card.md")
    assert rc == 2 and one_line(err), err
    assert "14.6 MB in fp16, over the 12 MB" in err
    assert not shipped.exists() or not list(shipped.iterdir())                 # nothing left behind


def test_bad_export_arguments_are_one_line(made, shipped, tmp_path):
    cases = [(("weights", "export", made / "ref", "--name", "x"), "usage: mangacolor weights export"),
             (("weights", "export", made / "ref", "--name", "x", "--card", tmp_path / "none.md"), "none.md: no such"),
             (("weights", "export", made / "ref", "--name", "a/b", "--card", made / "card.md"), "--name 'a/b'"),
             (("weights", "export", tmp_path / "nothing", "--name", "x", "--card", made / "card.md"), "nothing"),
             (("weights", "list", "--name", "x"), "go with `mangacolor weights export`"),
             (("weights", "path", "vgg16", "--json"), "--json goes with")]
    for argv, said in cases:
        rc, _, err = cli(*argv)
        assert rc == 2 and one_line(err) and said in err, (argv, err)


def test_api_export_and_shipped_dir(made, shipped):
    assert shipped_dir() == shipped and shipped_weights() == []
    f = export_shipped(made / "sr", "x2", made / "upcard.md")
    assert f == shipped / "x2.safetensors" and [r["name"] for r in shipped_weights()] == ["x2"]
    with pytest.raises(UserError, match="MB in fp16, over the 0.001 MB"):
        export_shipped(made / "sr", "tiny", made / "upcard.md", max_mb=0.001)


def test_the_package_installs_its_weights_folder(monkeypatch):
    monkeypatch.delenv(SHIPPED_ENV, raising=False)
    assert shipped_dir() == Path(runs.__file__).parent / "weights"
    assert (ROOT / "manga_colorization" / "weights").is_dir()
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(ROOT / "settings.ini")
    data = cfg["DEFAULT"]["package_data"].split()
    assert {"weights/*.safetensors", "weights/*.md", "experiments/*.json"} <= set(data)
    setup = (ROOT / "setup.py").read_text()
    assert 'cfg.get("package_data"' in setup and "package_data={cfg[\"lib_path\"]: package_data}" in setup
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "!manga_colorization/weights/*.safetensors" in ignored              # a shipped model can be committed


def test_hint_editor_without_a_colorizer_uses_the_shipped_model(made, both, shipped):
    from manga_colorization.hint_editor import HintEditor
    ed = HintEditor(made / "page.png", reference=made / "red.png", preview_size=32)
    assert ed.colorizer.G.source and Path(ed.colorizer.G.source).parent == shipped
    assert ed.colorizer.G.uses_reference and ed.colorizer.G.uses_hints
    same = HintEditor(None, Image.open(made / "page.png"), reference=made / "red.png", preview_size=32)
    assert np.abs(np.asarray(ed.apply(), np.float32) - np.asarray(same.apply(), np.float32)).max() <= 1
    with pytest.raises(UserError, match="needs a page"):
        HintEditor()


def test_hint_editor_without_shipped_model_is_one_line(made, shipped):
    from manga_colorization.hint_editor import HintEditor
    with pytest.raises(UserError, match=DEFAULT_REFERENCE_MODEL) as e:
        HintEditor(made / "page.png")
    assert "\n" not in str(e.value)
