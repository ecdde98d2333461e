"""Static checks of the package layout (issue #17's "Done when"), read with ``ast`` (nothing imported).

- no import cycle between litomo modules, counting function-level imports too;
- no import of a private (``_name``) symbol from another module, and no ``module._name``
  attribute use of another litomo module (a private module may be imported inside its own
  package, e.g. ``litomo.transport._mg`` by ``litomo.transport.diffusion``);
- ``litomo.phantom`` (synthetic data) is imported by nothing outside itself and ``litomo.cli``;
- no import fallback around litomo's own modules (``try: import litomo... except ImportError``);
- modules of at most 500 lines, functions of at most 80 lines (docstrings not counted).

Files other helpers are still restructuring are named in explicit allow-lists below; each entry
says why. The lead empties them at integration: an entry that no longer fails is itself an error,
so the lists cannot go stale.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "litomo"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80

# --------------------------------------------------------------------------- allow-lists
# (module or "module:function") -> reason. Owners named per docs/design.md; the lead removes
# entries as their owners finish. An entry that passes fails test_allow_lists_are_not_stale.
LONG_MODULES: dict[str, str] = {}
LONG_FUNCTIONS: dict[str, str] = {}
PRIVATE_IMPORTS: dict[str, str] = {}
IMPORT_FALLBACKS: dict[str, str] = {}
CYCLES: dict[str, str] = {}


# --------------------------------------------------------------------------- reading the tree

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        out[_module_name(path)] = (path, ast.parse(path.read_text(), filename=str(path)))
    return out


def _is_module(name: str) -> bool:
    return name in _modules()


def _imports(tree: ast.Module) -> list[tuple[str, str | None, ast.AST]]:
    """``(module, imported name or None, node)`` of every litomo import, at any depth."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node) for a in node.names if a.name.split(".")[0] == "litomo"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "litomo":
            out += [(node.module, a.name, node) for a in node.names]
    return out


def _targets(module: str, name: str | None) -> list[str]:
    """Modules an import makes this one depend on (a submodule named in ``from X import y``)."""
    if name is not None and _is_module(f"{module}.{name}"):
        return [f"{module}.{name}"]
    return [module] if _is_module(module) else []


@cache
def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in _modules()}
    for mod, (_, tree) in _modules().items():
        for target_mod, name, _ in _imports(tree):
            graph[mod].update(t for t in _targets(target_mod, name) if t != mod)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _allowed(key: str, allow: dict[str, str]) -> str | None:
    mod, _, func = key.partition(":")
    for pattern in allow:
        pmod, _, pfunc = pattern.partition(":")
        mod_ok = pmod == mod or (pmod.endswith(".*") and mod.startswith(pmod[:-1]))
        if mod_ok and (not func or pfunc in ("*", func)):
            return pattern
    return None


def _package(mod: str) -> str:
    path = _modules()[mod][0]
    return mod if path.name == "__init__.py" else mod.rpartition(".")[0]


# --------------------------------------------------------------------------- the checks

@cache
def _private_import_violations() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for mod, (_, tree) in _modules().items():
        bound: dict[str, str] = {}  # local name -> litomo module it names
        for target, name, node in _imports(tree):
            if name is None:
                continue
            full = f"{target}.{name}"
            if _is_module(full):
                bound[next(a.asname or a.name for a in node.names if a.name == name)] = full
                # a private module may be imported inside its own package only
                if name.startswith("_") and _package(mod) != target and not mod.startswith(target + "."):
                    found.setdefault(mod, []).append(f"private module {full}")
            elif name.startswith("_") and not name.startswith("__") and target != mod:
                found.setdefault(mod, []).append(f"{target}.{name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                found.setdefault(mod, []).append(f"{bound[node.value.id]}.{node.attr} (attribute)")
    return found


@cache
def _function_lengths() -> dict[str, int]:
    out = {}
    for mod, (_, tree) in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                        and isinstance(body[0].value.value, str):
                    n -= body[0].end_lineno - body[0].lineno + 1
                key = f"{mod}:{node.name}"
                out[key] = max(out.get(key, 0), n)
    return out


@cache
def _module_lengths() -> dict[str, int]:
    return {mod: len(path.read_text().splitlines()) for mod, (path, _) in _modules().items()}


@cache
def _import_fallbacks() -> dict[str, int]:
    """Modules with ``try: <import of litomo...> except ImportError`` (line of the try)."""
    out = {}
    for mod, (_, tree) in _modules().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Try):
                continue
            catches = any(isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                          or isinstance(h.type, ast.Tuple) and any(
                              isinstance(e, ast.Name) and e.id in ("ImportError", "ModuleNotFoundError")
                              for e in h.type.elts)
                          for h in node.handlers)
            own = any(_imports(ast.Module(body=[stmt], type_ignores=[])) for stmt in node.body)
            if catches and own:
                out[mod] = node.lineno
    return out


def test_the_tree_is_found():
    mods = _modules()
    assert "litomo.particles" in mods and "litomo.resample" in mods and len(mods) > 60


def test_no_import_cycles_including_function_level_imports():
    assert [c for c in _cycles(_graph()) if " ".join(c) not in CYCLES] == []


def test_cycle_detector_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_names_imported_across_modules():
    found = {m: v for m, v in _private_import_violations().items() if not _allowed(m, PRIVATE_IMPORTS)}
    assert found == {}


def test_phantom_is_a_leaf():
    users = sorted(
        mod for mod, deps in _graph().items()
        if any(d == "litomo.phantom" or d.startswith("litomo.phantom.") for d in deps)
        and not (mod == "litomo.phantom" or mod.startswith(("litomo.phantom.", "litomo.cli.")))
    )
    assert users == []


def test_no_import_fallbacks_for_litomo_modules():
    found = {m: line for m, line in _import_fallbacks().items() if not _allowed(m, IMPORT_FALLBACKS)}
    assert found == {}


def test_modules_are_short():
    long = {m: n for m, n in _module_lengths().items() if n > MAX_MODULE_LINES and not _allowed(m, LONG_MODULES)}
    assert long == {}


def test_functions_are_short():
    long = {f: n for f, n in _function_lengths().items()
            if n > MAX_FUNCTION_LINES and not _allowed(f, LONG_FUNCTIONS)}
    assert long == {}


@pytest.mark.parametrize("allow, actual", [
    (LONG_MODULES, lambda: {m for m, n in _module_lengths().items() if n > MAX_MODULE_LINES}),
    (LONG_FUNCTIONS, lambda: {f for f, n in _function_lengths().items() if n > MAX_FUNCTION_LINES}),
    (PRIVATE_IMPORTS, lambda: set(_private_import_violations())),
    (IMPORT_FALLBACKS, lambda: set(_import_fallbacks())),
    (CYCLES, lambda: {" ".join(c) for c in _cycles(_graph())}),
], ids=["modules", "functions", "private", "fallbacks", "cycles"])
def test_allow_lists_are_not_stale(allow, actual):
    offenders = actual()
    stale = [p for p in allow if p not in offenders and not any(_allowed(o, {p: ""}) for o in offenders)]
    assert stale == []
