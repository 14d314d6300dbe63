"""The installed package: every module imports, the console script answers."""
import importlib
import pkgutil
import subprocess

import manga_colorization


def all_modules():
    return sorted(m.name for m in pkgutil.iter_modules(manga_colorization.__path__) if not m.name.startswith("_"))


def test_modules_listed():
    assert {"core", "cli"} <= set(all_modules())


def test_every_module_imports():
    for name in all_modules():
        importlib.import_module(f"manga_colorization.{name}")


def test_cli_help_lists_subcommands():
    out = subprocess.run(["mangacolor", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "usage: mangacolor" in out.stdout


def test_console_script_installed():
    out = subprocess.run(["mangacolor", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and manga_colorization.__version__ in out.stdout
