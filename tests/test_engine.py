"""The package as a whole: `import engine` stays light, its lazy names resolve, and no module imports itself back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import engine

ENGINE = Path(engine.__file__).parent


def test_import_engine_loads_no_heavy_dependency():
    code = ("import sys, engine; heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'gradio') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lazy_names_resolve_to_their_modules():
    for name in ("load_segmenter", "resolve_source", "ModelSourceError", "ImageError", "open_dataset", "parse_prompts"):
        assert getattr(engine, name).__name__ == name


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ENGINE.parent).with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """engine module -> the engine modules its top-level imports run (its own parent packages left out)."""
    modules = {_module_name(p): p for p in ENGINE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engine"):
                targets.add(node.module)
                targets |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("engine")}
        parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        runs = {".".join(t.split(".")[:i]) for t in targets for i in range(2, t.count(".") + 2)}
        graph[name] = {m for m in runs if m in modules and m != name and m not in parents}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with a colour per module)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_in_the_core():
    core = ("engine.models", "engine.onnx", "engine.data", "engine.segmenter", "engine.prompts", "engine.paths",
            "engine.errors", "engine.images", "engine.masks", "engine.metrics", "engine.evaluate", "engine.cli")
    graph = {m: {t for t in ts if t.startswith(core)} for m, ts in import_graph().items() if m.startswith(core)}
    assert find_cycle(graph) is None
    assert "engine.models" not in {t for m, ts in graph.items() if m.startswith("engine.onnx.runtime") for t in ts}
