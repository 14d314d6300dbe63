"""The house rules of issues 10 and 21, checked on every CI run: one weights lookup, one colour path, one sampler, one
model registry and one loader, small functions and cells, no function of radon grade D or worse, notebooks lean and
free of widget state, methods where their class is, no Python in strings, and the layers: the import graph (lazy and
function-level imports included) has no circle and follows the notebook numbers, and no library module imports the
experiments."""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG, NBS = ROOT / "manga_colorization", ROOT / "nbs"
MODULES = sorted(p for p in PKG.rglob("*.py") if p.name not in ("_modidx.py", "__init__.py"))


def _name(path: Path) -> str:
    "Dotted module name inside the package: `core`, `experiments.grid`."
    return ".".join(path.relative_to(PKG).with_suffix("").parts)


def _trees():
    return {_name(p): ast.parse(p.read_text()) for p in MODULES}


def _imports(module: str, tree: ast.AST) -> set[str]:
    "Every house module `module` imports: top-level, lazy and function-level, relative or absolute."
    found, pkg = set(), module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("manga_colorization."):
                target = node.module.removeprefix("manga_colorization.")
            else: continue
            names = [target] if target else []
            # `from . import x`, `from .experiments import grid`
            names += [f"{target}.{a.name}".strip(".") for a in node.names]
            found |= {n for n in names if (PKG / (n.replace(".", "/") + ".py")).is_file()}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("manga_colorization.") for a in node.names
                      if a.name.startswith("manga_colorization.")}
    return found - {module}


def _graph() -> dict[str, set[str]]:
    return {m: _imports(m, t) for m, t in _trees().items()}


def _notebook_numbers() -> dict[str, str]:
    "{module: notebook number} from each notebook's `default_exp` (`02_data` -> 02, `18a_recipe_study` -> 18a)."
    numbers = {}
    for nb in NBS.glob("*.ipynb"):
        for cell in json.loads(nb.read_text())["cells"]:
            m = re.search(r"#\|\s*default_exp\s+(\S+)", "".join(cell["source"]))
            if m: numbers[m.group(1)] = nb.name.split("_")[0]
    return numbers


def test_weights_lookup_order_lives_in_runs_only():
    hits = [p.name for p in MODULES if re.search(r"""["']checkpoints/best\.pt["']|["']best\.pt["']""", p.read_text())]
    assert hits == ["runs.py"], hits


def test_one_colour_path_and_one_sampler():
    defs = [(m,
             n.name) for m, t in _trees().items() for n in ast.walk(t) if isinstance(n, (ast.FunctionDef,
                                                                                         ast.ClassDef))]
    assert [m for m, name in defs if name == "to_rgb"] == ["core"]
    assert not [d for d in defs if d[1] in ("prediction_to_rgb", "network_rgb", "predict_rgb") and d[0] != "runs"]
    samplers = [(m, n.name) for m, t in _trees().items() for n in ast.walk(t) if isinstance(n, ast.ClassDef)
                and any(getattr(b, "id", getattr(b, "attr", "")).endswith("Sampler") for b in n.bases)]
    assert samplers == [("data", "EpochSampler")], samplers


def test_one_public_generator_loader():
    loaders = [(m, n.name) for m, t in _trees().items() for n in ast.walk(t) if isinstance(n, ast.FunctionDef)
               and n.name in ("load_generator", "load_run_generator", "from_checkpoint")]
    assert loaders == [("runs", "load_generator")], loaders


def test_no_function_over_80_lines():
    long = [f"{m}.{n.name}: {n.end_lineno - n.lineno + 1}" for m, t in _trees().items() for n in ast.walk(t)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80]
    assert not long, long


def test_no_notebook_cell_over_60_lines_and_notebooks_lean():
    long, big = [], []
    for nb in sorted(NBS.glob("*.ipynb")):
        data = json.loads(nb.read_text())
        assert "widgets" not in data.get("metadata", {}), f"{nb.name} holds saved widget state"
        if nb.stat().st_size > 300_000: big.append(f"{nb.name}: {nb.stat().st_size // 1024} KB")
        if nb.name.startswith("18c_bench"): continue
        for i, c in enumerate(data["cells"]):
            n = len("".join(c["source"]).splitlines())
            if c["cell_type"] == "code" and n > 60: long.append(f"{nb.name} cell {i}: {n} lines")
    assert not long, long
    assert not big, big


def test_radon_finds_nothing_of_grade_d_or_worse():
    pytest.importorskip("radon")
    out = subprocess.run([sys.executable, "-m", "radon", "cc", "-n", "D", str(PKG)], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "", out.stdout


def test_import_graph_has_no_circle():
    graph, state, circles = _graph(), {}, []
    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                circles.append(" -> ".join(path[path.index(d):] + [d]) if d in path else f"{m} -> {d}")
            elif d not in state: visit(d, path + [d])
        state[m] = "done"
    for m in sorted(graph):
        if m not in state: visit(m, [m])
    assert not circles, circles


def test_layers_follow_the_notebook_numbers():
    ("A module imports only modules of lower-numbered notebooks (the cli entry point aside); nothing imports cli or an "
     "experiment.")
    graph, number = _graph(), _notebook_numbers()
    assert set(graph) <= set(number), set(graph) - set(number)             # every module has its notebook
    upward = [f"{m} ({number[m]}) imports {d} ({number[d]})" for m, deps in graph.items() if m != "cli"
              for d in deps if number[d] >= number[m]]
    assert not upward, upward
    assert not [m for m, deps in graph.items() if "cli" in deps]
    library_to_experiments = [(m, d) for m, deps in graph.items() for d in deps
                              if d.startswith("experiments.") and not m.startswith("experiments.") and m != "cli"]
    assert not library_to_experiments, library_to_experiments
    # the data layer never reaches up into the networks
    assert graph["guidance"] <= {"core", "data", "synthetic"}


def test_notebooks_import_only_lower_numbered_modules():
    "Test cells too: reading the notebooks in order never meets a module that is not yet defined (the cli aside)."
    number, upward = _notebook_numbers(), []
    for nb in sorted(NBS.glob("*.ipynb")):
        mine = nb.name.split("_")[0]
        text = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        for m in set(re.findall(r"manga_colorization\.([\w.]+) import", text)):
            if m != "cli" and m in number and number[m] > mine: upward.append(f"{nb.name} imports {m} ({number[m]})")
    assert not upward, upward


def test_methods_stand_in_their_class():
    "No `Cls.name = _fn`: a method is written in its class body or added with fastcore's `@patch`."
    pattern = re.compile(r"^[A-Z]\w*\.\w+(\s*,\s*[A-Z]\w*\.\w+)*\s*=\s*(property\()?_\w+", re.M)
    hits = [f"{_name(p)}: {m.group(0)}" for p in MODULES for m in pattern.finditer(p.read_text())]
    assert not hits, hits


def test_no_python_in_strings():
    "Child processes run real functions (`python -m ...`), never code held in a string (`python -c`)."
    hits = [_name(p) for p in MODULES if re.search(r"""["']-c["']""", p.read_text())]
    assert not hits, hits


def test_lines_at_most_120_characters():
    ("Every package line is at most 120 characters, but the first line of nbdev's generated `__all__` (the notebooks, "
     "tests and "
     "benchmarks are checked by `ruff` in CI at 120 without exception).")
    long = [f"{_name(p)}:{i}" for p in MODULES for i, line in enumerate(p.read_text().splitlines(), 1)
            if len(line) > 120 and not line.startswith("__all__ = [")]
    assert not long, long


def test_no_docstring_split_in_two_statements():
    "A docstring continued as a second string statement is a no-op that silently cuts the docstring: write one string."
    split = [f"{m}.{n.name}" for m, t in _trees().items() for n in ast.walk(t)
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and len(n.body) > 1
             and all(isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str)
                     for b in n.body[:2])]
    assert not split, split


def test_one_registry_and_one_loader():
    defs = [(m,
             n.name) for m, t in _trees().items() for n in ast.walk(t) if isinstance(n, (ast.FunctionDef,
                                                                                         ast.ClassDef))]
    assert [m for m, name in defs if name == "create_model"] == ["models"]
    assert [m for m, name in defs if name == "list_models"] == ["models"]
    assert not [d for d in defs if d[1] in ("load_upscaler", "_read_upscaler", "make_upscaler",
                                            "upscaler_from_state")], defs
    registries = [m for m, t in _trees().items() for n in ast.walk(t) if isinstance(n, (ast.Assign, ast.AnnAssign))
                  for tg in (n.targets if isinstance(n, ast.Assign) else [n.target])
                  if getattr(tg, "id", "") in ("GENERATORS", "UPSCALERS")]
    assert not registries, registries


def test_plain_install_requirements_cover_the_package_imports():
    ("Every third-party module the package imports at module level is a distribution in settings.ini's `requirements` "
     "(a plain "
     "`pip install -e .` must be enough for `mangacolor demo`; dev extras are not there).")
    import configparser
    from importlib.metadata import packages_distributions
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
    required = {norm(re.split(r"[<>=!~\[ ]", r)[0]) for r in cfg["DEFAULT"]["requirements"].split()}
    dists = packages_distributions()
    missing = set()
    for py in (ROOT / "manga_colorization").glob("*.py"):
        # module level only: lazy imports inside functions are optional
        for node in ast.parse(py.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("manga_colorization", "__future__"): continue
                if not {norm(d) for d in dists.get(top, [top])} & required: missing.add(f"{py.name}: {top}")
    assert not missing, sorted(missing)
