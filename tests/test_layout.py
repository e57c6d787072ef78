"""The project's layout: the top-level modules import one another in one direction only (no circles).

Every `import x` / `from x import y` anywhere in a file counts, inside functions too (a circle through a
function-level import is still a circle for a reader). The files are parsed with `ast`, never imported.
Run `python tests/test_layout.py` to print each module's project imports, lowest layer first."""
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def project_imports(folder):
    """{module: set of the folder's other top-level modules it imports} for every folder/*.py."""
    mods = {p.stem: p for p in sorted(Path(folder).glob("*.py"))}
    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        graph[name] = {m for m in found if m in mods and m != name}
    return graph


def find_cycle(graph):
    """One import circle as a list [a, b, ..., a], or None. Depth-first search with three colours."""
    state, stack = {}, []                                  # state: 1 = on the current path, 2 = done

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                cyc = visit(v)
                if cyc:
                    return cyc
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state:
            cyc = visit(u)
            if cyc:
                return cyc
    return None


def layers(graph):
    """Modules in import order: each one's imports all appear before it (graph must have no circle)."""
    order, placed = [], set()
    while len(order) < len(graph):
        ready = sorted(m for m in graph if m not in placed and graph[m] <= placed)
        order += ready
        placed.update(ready)
    return order


def test_no_import_circles():
    graph = project_imports(REPO)
    cyc = find_cycle(graph)
    assert cyc is None, "import circle: " + " -> ".join(cyc)


def test_the_walker_sees_the_known_imports():
    """The walk finds imports at module level and inside functions (else the test above proves nothing)."""
    graph = project_imports(REPO)
    assert "model" in graph["gradients"]                                   # `from model import ...` at the top
    assert "train" in graph["evaluate"] and "probe_pos" in graph["evaluate"]   # inside functions
    assert "gradients" not in graph["model"]               # the rule: gradients may import model, not the reverse


def test_a_circle_is_caught(tmp_path):
    """A fake project with a circle through a function-level import: the check must fail on it."""
    (tmp_path / "low.py").write_text("import json\n\ndef f():\n    from high import g\n    return g\n",
                                     encoding="utf-8")
    (tmp_path / "mid.py").write_text("import low\n", encoding="utf-8")
    (tmp_path / "high.py").write_text("from mid import low\n\ndef g():\n    pass\n", encoding="utf-8")
    graph = project_imports(tmp_path)
    assert graph == {"low": {"high"}, "mid": {"low"}, "high": {"mid"}}     # json is not a project module
    assert find_cycle(graph) in (["high", "mid", "low", "high"], ["low", "high", "mid", "low"],
                                 ["mid", "low", "high", "mid"])
    (tmp_path / "low.py").write_text("import json\n", encoding="utf-8")    # break it: no circle, three layers
    graph = project_imports(tmp_path)
    assert find_cycle(graph) is None and layers(graph) == ["low", "mid", "high"]


if __name__ == "__main__":
    g = project_imports(REPO)
    cycle = find_cycle(g)
    if cycle:
        sys.exit("import circle: " + " -> ".join(cycle))
    for m in layers(g):
        print(f"{m:15s} <- {', '.join(sorted(g[m])) or '(nothing from the project)'}")
