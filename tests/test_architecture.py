"""The package's shape: one namespace, dependencies one way, no import circles, no private names across modules.

Every import of every module is read from its source (module level and inside
functions, relative ones resolved), so a lazy import is an arrow like any other.
The layers, bottom to top (docs/DESIGN.md):

    space        stands alone: its folder ships to the Hub by itself
    train        uses nothing above it
    evaluation   uses train
    model_card   uses train and evaluation (and space's folder, which it uploads)
    the top      gpt2_rlhf.cli / .pipeline / .stages / .serve: the `rlhf` command, uses all
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NS = "gpt2_rlhf"
FOLDERS = {"train": "train", "evaluation": "evaluation", "model_card": "model_card", "space": "space", "": "rlhf"}
# what each layer may import from the package (besides itself)
ALLOWED = {
    "space": set(),
    "train": set(),
    "evaluation": {"train"},
    "model_card": {"train", "evaluation", "space"},
    "": {"train", "evaluation", "model_card", "space"},
}


def modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    out = {}
    for layer, folder in FOLDERS.items():
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            if layer == "" and path.parent != base:
                continue
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([NS] + ([layer] if layer else []) + parts)] = path
    return out


MODULES = modules()


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED and parts[1] else ""


def imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the file."""
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            # `from pkg import submodule` imports the submodule
            subs = [n for n in names if f"{target}.{n}" in MODULES]
            out += [(f"{target}.{n}", [], node.lineno) for n in subs]
            rest = [n for n in names if n not in subs]
            if rest or not subs:
                out.append((target, rest, node.lineno))
    return [(t, n, line) for t, n, line in out if t == NS or t.startswith(NS + ".")]


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, path in MODULES.items():
        for target, _, _ in imports(m, path):
            if target in MODULES and target != m:
                g[m].add(target)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_every_kind_of_import():
    """The checks below are only as good as the import reader: it must see lazy and relative imports."""
    g = graph()
    assert "gpt2_rlhf.train.sampling" in g["gpt2_rlhf.train.ppo.trainer"]  # relative, two levels
    assert "gpt2_rlhf.train.ppo.core" in g["gpt2_rlhf.train.ppo.trainer"]  # `from . import core`
    assert "gpt2_rlhf.train.ppo.trainer" in g["gpt2_rlhf.train.ppo"]  # inside a function of a package
    assert "gpt2_rlhf.pipeline" in g["gpt2_rlhf.cli"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    assert cycles(graph()) == []


def test_dependencies_run_one_way():
    bad = []
    for m, path in MODULES.items():
        for target, _, line in imports(m, path):
            if target == NS:
                continue
            src, dst = layer_of(m), layer_of(target)
            if dst != src and dst not in ALLOWED[src]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {src or 'top'} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_upward_references_by_string():
    """A lower layer must not name an upper one in a 'module:attribute' string either (lazy registries)."""
    pattern = re.compile(r"gpt2_rlhf\.(train|evaluation|model_card|space)\b")
    bad = []
    for m, path in MODULES.items():
        src = layer_of(m)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
                for dst in pattern.findall(node.value.split(":")[0]):
                    if dst != src and dst not in ALLOWED[src]:
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not bad, "\n".join(bad)


def test_no_private_names_across_modules():
    bad = []
    for m, path in MODULES.items():
        for target, names, line in imports(m, path):
            if target != m:
                bad += [f"{path.relative_to(ROOT)}:{line}: {n} from {target}" for n in names
                        if n.startswith("_") and not n.startswith("__")]
    assert not bad, "\n".join(bad)


def test_installed_top_level_names_are_one_namespace():
    """What the wheel puts into site-packages: gpt2_rlhf/ only (CI installs it for real, `pip install .`)."""
    import sysconfig

    site = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    found = [d for d in importlib.metadata.distributions(path=site) if d.metadata["Name"] == "gpt2-rlhf"]
    assert found, f"gpt2-rlhf is not installed in {site}"
    dist = found[0]
    files = [str(f) for f in dist.files or []]
    if any("__editable__" in f for f in files):
        pytest.skip("editable install (development): its finder maps the folders; CI checks a real install")
    tops = {f.split("/")[0] for f in files if not f.startswith("..")}
    assert tops == {NS, f"gpt2_rlhf-{dist.version}.dist-info"}, sorted(tops)


def test_module_cli_runs_from_a_directory_holding_train_py(tmp_path):
    """`train.py` (or a train/ folder) in the working directory does not shadow the package."""
    (tmp_path / "train.py").write_text("raise SystemExit('the wrong train was imported')\n")
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "__init__.py").write_text("raise SystemExit('the wrong evaluation was imported')\n")
    proc = subprocess.run([sys.executable, "-m", "gpt2_rlhf.cli", "run", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--output-dir" in proc.stdout
    proc = subprocess.run([sys.executable, "-c", "import gpt2_rlhf.train.config, gpt2_rlhf.evaluation.config"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
