"""The package's seams: no import circles, training and evaluation never reach into the Agent, and the
front-ends import no torch at module level (so `personae --help` and the Discord settings stay light).

Imports are read from the source (ast), in functions too: a lazy import inside a circle is still a circle.
Imports under `if TYPE_CHECKING:` do not run and do not count.
"""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "agent"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The `agent.*` (and other) modules `path` imports, relative imports resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node, depth):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit_one(sub, depth)
                continue
            visit_one(child, depth)

    def visit_one(child, depth):
        inside = depth + isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if top_level_only and inside:
            return
        if isinstance(child, ast.Import):
            found.update(a.name for a in child.names)
        elif isinstance(child, ast.ImportFrom):
            if child.level:
                base = package.split(".")
                base = base[:len(base) - child.level + 1]
                root = ".".join(base + ([child.module] if child.module else []))
            else:
                root = child.module
            found.add(root)
            found.update(f"{root}.{a.name}" for a in child.names)  # `from pkg import module`
        visit(child, inside)

    visit(ast.parse(path.read_text(), str(path)), 0)
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        edges = set()
        for target in _imports(path):
            while target and target not in MODULES:  # `from agent.x import function` -> agent.x
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
                parts = target.split(".")  # importing agent.a.b runs agent/a/__init__.py first
                edges.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in MODULES
                             and p != name and not name.startswith(p + "."))
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_reader_sees_imports_in_functions_and_skips_type_checking(tmp_path):
    (tmp_path / "agent" / "x").mkdir(parents=True)
    probe = tmp_path / "agent" / "x" / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nfrom . import sibling\nif TYPE_CHECKING:\n"
                     "    from ..config import Config\ndef f():\n    from ..agent import Agent\n")
    global REPO
    saved, REPO = REPO, tmp_path
    try:
        found = _imports(probe)
    finally:
        REPO = saved
    assert "agent.x.sibling" in found and "agent.agent" in found and "agent.config" not in found
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_training_and_evaluation_do_not_import_the_agent():
    graph = _graph()
    offenders = {n: sorted(graph[n] & {"agent.agent", "agent.cli"}) for n in graph
                 if n.startswith(("agent.training", "agent.evaluation", "agent.embedding"))}
    assert {n: v for n, v in offenders.items() if v} == {}


def test_front_ends_import_no_torch_at_module_level():
    heavy = {"torch", "transformers", "open_clip", "whisper"}
    for name, path in MODULES.items():
        if name.startswith(("agent.frontends", "agent.discord_bot", "agent.server")) or name == "agent.cli":
            top = {m.split(".")[0] for m in _imports(path, top_level_only=True)}
            assert not top & heavy, f"{path.relative_to(REPO)} imports {sorted(top & heavy)} at module level"


def test_only_the_scheduler_calls_llama_decode():
    """One owner of the llama.cpp context: `llama_decode` is called by models/llamacpp.py alone, and its
    `decode` (and the state calls) by the scheduler's sequence table and loop alone."""
    callers = {".llama_decode(": set(), "state_set(": set(), "state_get(": set()}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for needle in callers:
            if needle in text:
                callers[needle].add(path.relative_to(PACKAGE).as_posix())
    assert callers[".llama_decode("] == {"models/llamacpp.py"}
    decode_calls = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                    if "model.decode(" in p.read_text(encoding="utf-8")}
    assert decode_calls == {"generation/scheduler.py"}
    assert callers["state_set("] | callers["state_get("] <= {"models/llamacpp.py", "generation/sequences.py"}
