"""`pages`, the one owner of page I/O, as a comic reader sees its archives: `mangacolor upscale` and
`mangacolor colorize` on a .cbz whose ComicInfo.xml gives every page's byte and pixel size, read back with a real
ComicInfo reader (comicapi, from PyPI), which must report the sizes of the pages as written."""
import contextlib
import io
import zipfile

import pytest
import torch
from comicapi.comicarchive import ComicArchive
from PIL import Image

from manga_colorization.cli import main
from manga_colorization.models import create_model, make_generator, save_generator
from manga_colorization.synthetic import synth_page

SIZE = (48, 68)                                  # a 768 x 1088 page, sixteen times smaller


def cli(*args) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err): code = main([str(a) for a in args])
    return code, err.getvalue()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO(); img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def chapter(tmp_path):
    "A .cbz of three gray pages and a colour one, out of order, with a ComicInfo.xml telling each page's true sizes."
    pages = {f"p{k:03d}.png": png(synth_page(seed=4, index=k, size=SIZE).gray) for k in (2, 1, 3)}
    pages["p004.png"] = png(synth_page(seed=4, index=4, size=SIZE).color)      # colour: colorize copies it through
    order = sorted(pages)
    tags = "".join(f'<Page Image="{i}" ImageSize="{len(pages[n])}" ImageWidth="{SIZE[0]}" ImageHeight="{SIZE[1]}" />'
                   for i, n in enumerate(order))
    path = tmp_path / "in" / "chapter.cbz"; path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ComicInfo.xml", '<?xml version="1.0" encoding="utf-8"?>\n'
                                    f"<ComicInfo><Series>S</Series><Pages>{tags}</Pages></ComicInfo>")
        for name, data in pages.items(): z.writestr(name, data)
    return path


def reader_sizes(cbz) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    "Per page, as comicapi reads the archive: ((ImageWidth, ImageHeight, ImageSize) it reports, those of the page)."
    ca = ComicArchive(cbz)
    md = ca.read_cix()
    assert md.series == "S" and len(md.pages) == ca.get_number_of_pages() == 4, md.pages   # our page list, not rebuilt
    found = []
    for p in md.pages:
        data = ca.get_page(int(p["Image"]))
        told = (int(p["ImageWidth"]), int(p["ImageHeight"]), int(p["ImageSize"]))
        found.append((told, (*Image.open(io.BytesIO(data)).size, len(data))))
    return found


def test_upscale_sets_every_comicinfo_page_size_from_the_written_pages(tmp_path, chapter):
    torch.manual_seed(0)
    G = create_model("compact", scale=2, in_ch=1, width=4, n_conv=1)
    torch.nn.init.normal_(G.tail.weight, std=0.05)
    save_generator(G, tmp_path / "sr", {"task": "upscale", "scale": 2, "pad_multiple": 1})
    code, err = cli("upscale", chapter, "--checkpoint", tmp_path / "sr", "--out", tmp_path / "out", "--scale", 2)
    assert code == 0, err
    sizes = reader_sizes(tmp_path / "out" / "chapter.cbz")
    assert [told for told, _ in sizes] == [real for _, real in sizes], sizes
    assert {real[:2] for _, real in sizes} == {(2 * SIZE[0], 2 * SIZE[1])}, sizes     # every page enlarged, colour too


def test_colorize_sets_every_comicinfo_page_size_from_the_written_pages(tmp_path, chapter):
    torch.manual_seed(0)
    G = make_generator("unet", width=8, depth=4).eval()
    save_generator(G, tmp_path / "run", {"size": 64, "input_mode": "gray", "out_ch": 3})
    code, err = cli("colorize", chapter, "--checkpoint", tmp_path / "run", "--out", tmp_path / "out", "--device", "cpu")
    assert code == 0, err
    out = tmp_path / "out" / "chapter.cbz"
    sizes = reader_sizes(out)
    assert [told for told, _ in sizes] == [real for _, real in sizes], sizes
    assert {real[:2] for _, real in sizes} == {SIZE}, sizes
    with zipfile.ZipFile(chapter) as src, zipfile.ZipFile(out) as z:
        assert z.read("p004.png") == src.read("p004.png")                              # the colour page: byte for byte
        assert z.read("p001.png") != src.read("p001.png")
        assert Image.open(io.BytesIO(z.read("p001.png"))).mode == "RGB"
