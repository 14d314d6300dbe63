"The Hint-AUC benchmark script (benchmarks/hint_auc.py) needs hintauc only in its own venv: its --help runs without it."
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "hint_auc.py"


def test_help_runs_without_hintauc():
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for flag in ("--hints-run", "--reference-run", "--train", "--path-method", "--json"):
        assert flag in r.stdout


def test_no_hintauc_import_at_module_level():
    src = SCRIPT.read_text()
    top = [line for line in src.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in top if "hintauc" in line or "torch" in line or "manga_colorization" in line], top
