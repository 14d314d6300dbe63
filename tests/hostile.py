"""A corpus of hostile inputs, built at test time (no binary files are committed): the broken, odd and malicious images,
links, names and archives that real folders hold. `build_corpus(root)` writes them under `root` and returns one
`Case` per input."""
from __future__ import annotations

import hashlib
import io
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

NON_UTF8 = b"\xff\xfe-page.png"      # a name that is not UTF-8 (old Windows and Japanese archives)


@dataclass
class Case:
    ("One hostile input: `name` says what it is; `kind` is 'image', 'link' (in a folder) or 'archive'; `readable`: "
     "load_image reads it.")
    name: str
    path: Path
    kind: str
    readable: bool
    # for a folder walk: the kind of skipped entry it is said as ('' = it is a page, read or failed)
    skipped: str = ""


def page(seed: int, size=(48, 64)) -> Image.Image:
    "A small gray page with some structure (a good file)."
    rng = np.random.default_rng(seed)
    arr = np.full(size[::-1], 235, np.uint8)
    for _ in range(6):
        x, y = rng.integers(0, size[0] - 8), rng.integers(0, size[1] - 8)
        arr[y:y + 8, x:x + 8] = rng.integers(20, 200)
    return Image.fromarray(arr)


def encoded(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO(); img.save(buf, fmt, **options); return buf.getvalue()


def bilevel_bomb(width: int = 20000, height: int = 10000) -> bytes:
    "A 1-bit PNG of width x height white pixels: a few kB on disk, 200 megapixels when decoded (over PIL's guard)."
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row, z = b"\x00" + b"\xff" * ((width + 7) // 8), zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR",
                                        struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0,
                                                    0)) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _images(d: Path) -> list[Case]:
    "The image files: broken, odd modes and sizes, rotated, a bomb, a name that is not UTF-8."
    good = encoded(page(1)); jpeg = encoded(page(2).convert("RGB"), "JPEG", quality=90)
    pal = page(3).convert("P"); pal.info["transparency"] = 0
    exif = Image.Exif(); exif[0x0112] = 6
    files = {"zero_byte.png": (b"", False), "truncated.png": (good[:len(good) // 2], False),
             "truncated.jpg": (jpeg[:300], False),
             "text.png": (b"this is a text file, not a picture\n",
                          False), "one_pixel.png": (encoded(Image.new("L", (1, 1), 128)), True),
             "wide_20000x20.png": (encoded(Image.new("L", (20000, 20), 200)), True),
             "cmyk.jpg": (encoded(page(4).convert("RGB").convert("CMYK"), "JPEG"), True),
             "sixteen_bit.png": (encoded(Image.fromarray(np.asarray(page(5), np.uint16) * 257)), True),
             "palette_alpha.png": (encoded(pal, transparency=0), True), "photo.webp": (encoded(page(6), "WEBP"), True),
             "exif_rotated.jpg": (encoded(page(7).convert("RGB"), "JPEG", exif=exif),
                                  True), "bomb_1bit.png": (bilevel_bomb(), False)}
    cases = []
    for name, (data, readable) in files.items():
        (d / name).write_bytes(data); cases.append(Case(name, d / name, "image", readable))
    raw = os.path.join(os.fsencode(d), NON_UTF8)
    with open(raw, "wb") as f: f.write(good)
    cases.append(Case("non-UTF-8 name", Path(os.fsdecode(raw)), "image", True))
    frames = [page(8 + i).convert("P") for i in range(3)]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    cases.append(Case("animated GIF", d / "animated.gif", "image", True, skipped="unsupported"))
    return cases


def _links(d: Path) -> list[Case]:
    "Links: a folder that links back to itself, a dangling link, a link to itself."
    (d / "loop").symlink_to(".")
    (d / "dangling.png").symlink_to(d / "no-such-file.png")
    (d / "self.png").symlink_to("self.png")
    return [Case("link loop (ln -s . loop)", d / "loop", "link", False, skipped="link loop"),
            Case("dangling link", d / "dangling.png", "link", False, skipped="broken link"),
            Case("link to itself", d / "self.png", "link", False, skipped="broken link")]


def _zip(path: Path, members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data, compress_type=method)
    return path


def _archives(d: Path) -> list[Case]:
    "Archives: zip-slip and absolute members, a zip bomb that declares its size honestly, a .cbz that is not a zip."
    good = encoded(page(11))
    return [Case("zip-slip member", _zip(d / "zip_slip.cbz", {"01.png": good, "../../evil.png": good}), "archive",
                 True),
            Case("absolute member", _zip(d / "absolute.cbz", {"/etc/abs.png": good, "02.png": good}), "archive", True),
            Case("zip bomb (honest sizes)", _zip(d / "zip_bomb.cbz", {"bomb.png": bytes(4 << 20)}), "archive", False),
            Case("not a zip", d / "not_a_zip.cbz", "archive", False)]


def build_corpus(root: Path, good: int = 4) -> list[Case]:
    ("Write the corpus under root/pages (images and links, with `good` good pages) and root/archives; one `Case` per "
     "hostile input.")
    pages, archives = root / "pages", root / "archives"
    pages.mkdir(parents=True); archives.mkdir(parents=True)
    for i in range(good): page(100 + i).save(pages / f"good_{i}.png")
    cases = _images(pages) + _links(pages) + _archives(archives)
    (archives / "not_a_zip.cbz").write_text("PK? no: a text file named .cbz\n")
    return cases


def snapshot(root: Path) -> dict[str, str]:
    ("{relative path (hex bytes): sha1 of the bytes, 'link -> target' or 'dir'} of everything under `root`, links not "
     "followed.")
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = os.fsencode(p.relative_to(root)).hex()
            if p.is_symlink(): out[rel] = f"link -> {os.readlink(p)}"
            elif p.is_file(): out[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
            elif p.is_dir(): out[rel] = "dir"
    return out
