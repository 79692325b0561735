"""The package's shape: no import cycle in the runtime, the runtime never imports evaluation
code, and `import vars_langgraph.config` stays light (issue 14)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "vars_langgraph"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports when run (module level or inside functions;
    `if TYPE_CHECKING:` blocks excluded). Importing `a.b.c` also runs the `a.b` package's
    `__init__` unless the importer lives inside that package."""
    mods = _modules()

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
        out: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.startswith("vars_langgraph"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    out.add(full if full in mods else resolve(node.module))
            elif isinstance(node, ast.Import):
                out |= {resolve(a.name) for a in node.names if a.name.startswith("vars_langgraph")}
        for target in list(out):
            parts = target.split(".")
            out |= {".".join(parts[:i]) for i in range(1, len(parts))
                    if not mod.startswith(".".join(parts[:i]) + ".")}
        out.discard(mod)
        graph[mod] = out
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path, or None (iterative DFS)."""
    state: dict[str, int] = {}
    for root in graph:
        if root in state:
            continue
        stack = [(root, iter(sorted(graph.get(root, ()))))]
        path, state[root] = [root], 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def runtime(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return graph


def test_runtime_has_no_import_cycle():
    assert find_cycle(runtime(import_graph())) is None


def test_runtime_never_imports_eval():
    """The runtime distribution holds no evaluation code and imports none (the CLI finds the
    suites through entry points)."""
    assert not (PKG / "eval").exists()
    wrong = [p for p in PKG.rglob("*.py") if "vars_langgraph_eval" in p.read_text()]
    assert not wrong


def test_importing_the_runtime_loads_no_eval_code():
    code = ("import sys, vars_langgraph.graph, vars_langgraph.integrations, vars_langgraph.cli, "
            "vars_langgraph.storage, vars_langgraph.models.extraction; "
            "print([m for m in sys.modules if m.startswith('vars_langgraph_eval')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_config_import_is_light():
    code = ("import sys, vars_langgraph.config; "
            "print([m for m in ('langgraph', 'langchain_core', 'faiss', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_readme_layout_names_every_part_of_the_tree():
    readme = (PKG.parent / "README.md").read_text()
    block = readme.split("## Where things are", 1)[1].split("```", 2)[1]
    parts = [p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    parts += [p.name for p in PKG.glob("*.py") if p.name != "__init__.py"]
    missing = [p for p in parts if p not in block and p.removesuffix(".py") not in block]
    assert not missing, f"README's layout section does not mention {missing}"
