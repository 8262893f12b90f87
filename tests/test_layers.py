"""The import layering rule of the package (README, "Architecture"), checked on the source text.

A module may import modules of its own area (``alphapo.<area>``) and of areas in *lower* layers, never of
a higher layer or of another area of its own layer. Imports inside functions count too: a lazy import is
still a dependency. No module imports one of ours by a name computed at run time (``importlib``), which
would hide a dependency, and possibly a cycle, from this check. Module-level imports have no cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# lowest first; README.md's "Architecture" section shows the same table
LAYERS: list[tuple[str, ...]] = [
    ("alphapo", "alphapo.errors", "alphapo.io"),
    ("alphapo.losses", "alphapo.analysis", "alphapo.tiny_models"),
    ("alphapo.data",),
    ("alphapo.training", "alphapo.generation"),
    ("alphapo.evaluation",),
    ("alphapo.toyworld",),
    ("alphapo.quickstart", "alphapo.demo", "alphapo.experiments"),
    ("alphapo.cli",),
]
LAYER = {area: n for n, areas in enumerate(LAYERS) for area in areas}

# (module, why) of the only run-time imports by computed name: none of them names a module of ours
DYNAMIC_IMPORTS = {("alphapo.generation.judge_registry", "the user's py:MODULE:ATTR judge spec"),
                   ("alphapo.experiments.runner", "a spawned worker re-imports the modules that registered the jobs")}


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in sorted((root / "alphapo").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _area(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _imports(module: str, path: Path, known: set[str], *, top_level_only: bool = False) -> set[str]:
    """The modules of ours that ``module`` imports (``from pkg import sub`` resolved to ``pkg.sub``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "alphapo"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                pkg = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join([*pkg, base] if base else pkg)
            if base.split(".")[0] != "alphapo":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    found.discard(module)
    return found


def layer_violations(root: Path = SRC) -> list[str]:
    modules = _modules(root)
    bad = []
    for module, path in modules.items():
        src = _area(module)
        for target in sorted(_imports(module, path, set(modules))):
            dst = _area(target)
            if dst != src and LAYER[dst] >= LAYER[src]:
                bad.append(f"{module} imports {target} (layer {LAYER[dst]} >= {LAYER[src]})")
    return bad


def string_imports(root: Path = SRC) -> list[str]:
    """Run-time imports that name one of our modules, or compute the name outside ``DYNAMIC_IMPORTS``."""
    allowed = {m for m, _ in DYNAMIC_IMPORTS}
    bad = []
    for module, path in _modules(root).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in ("import_module", "__import__") or not node.args:
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                if arg.value.split(".")[0] == "alphapo":
                    bad.append(f"{module}: {ast.unparse(node)}")
            elif module not in allowed:
                bad.append(f"{module}: {ast.unparse(node)} (computed name)")
    return bad


def import_cycles(root: Path = SRC) -> list[list[str]]:
    modules = _modules(root)
    graph = {m: _imports(m, p, set(modules), top_level_only=True) & set(modules) for m, p in modules.items()}
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for nxt in sorted(graph[m]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_every_area_has_a_layer():
    assert sorted({_area(m) for m in _modules(SRC)} - set(LAYER)) == []


def test_no_module_imports_a_higher_layer():
    assert layer_violations() == []


def test_no_run_time_import_hides_a_dependency():
    assert string_imports() == []


def test_module_level_imports_have_no_cycles():
    assert import_cycles() == []


def test_the_checks_catch_what_they_forbid(tmp_path):
    """The checkers on a small fake tree: each forbidden pattern is reported, once."""
    pkg = tmp_path / "alphapo"
    for sub in ("losses", "generation", "toyworld"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "losses" / "a.py").write_text("def f():\n    from alphapo.generation import b\n")  # lazy, upward
    (pkg / "generation" / "b.py").write_text(
        "import importlib\nfrom alphapo import errors\nfrom alphapo.losses import a\n"
        "def g(name):\n    importlib.import_module('alphapo.toyworld')\n    importlib.import_module(name)\n")
    (pkg / "toyworld" / "c.py").write_text("from .d import x\n")
    (pkg / "toyworld" / "d.py").write_text("from alphapo.toyworld.c import y\n")
    assert layer_violations(tmp_path) == ["alphapo.losses.a imports alphapo.generation.b (layer 3 >= 1)"]
    assert string_imports(tmp_path) == [
        "alphapo.generation.b: importlib.import_module('alphapo.toyworld')",
        "alphapo.generation.b: importlib.import_module(name) (computed name)"]
    assert import_cycles(tmp_path) == [["alphapo.toyworld.c", "alphapo.toyworld.d", "alphapo.toyworld.c"]]


def test_the_readme_shows_these_layers():
    import re

    text = (SRC.parent / "README.md").read_text(encoding="utf-8")
    block = text.split("## Architecture", 1)[1].split("```", 2)[1]
    shown = {int(m[1]): tuple(f"alphapo.{n}" for n in m[2].split(", "))
             for m in re.finditer(r"^(\d+)  (\S+(?:, \S+)*)\s{2,}", block, flags=re.MULTILINE)}
    expected = {n: tuple(a for a in areas if a != "alphapo") for n, areas in enumerate(LAYERS)}
    assert shown == expected
