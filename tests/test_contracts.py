"""The runtime's contracts, read from the source with ``ast``: no import circle between cnnedge's modules
(an import inside a function counts too), and nothing outside cnnedge/runtime touches a backend's or the
Classifier's private attributes (``be._x``, ``backend._x``, ``clf._x``, ``self.backend._x``); and across the
package, no object's private attribute reached and no private name imported from another module, and no
function over 80 lines."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWNERS = {"be", "backend", "clf", "classifier"}  # names that hold a backend or a Classifier by convention


def _modules() -> dict[str, Path]:
    pkg = ROOT / "cnnedge"
    out = {}
    for p in pkg.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _imports(mod: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The cnnedge modules ``mod`` imports (a package's parents, which Python runs first anyway, left out)."""
    here = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            cands = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            cands = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in cands if c in mods and c != mod and not mod.startswith(c + ".") and c != "cnnedge"}
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def test_no_import_circle_in_the_package():
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    # the runner imports the pipeline where it lives (no shim between them), and the decoders sit inside it
    assert {"cnnedge.runtime.pipeline", "cnnedge.runtime.pipeline.stats"} <= graph["cnnedge.runtime.runner"]
    assert "cnnedge.runtime.pipeline.decode_pool" in graph["cnnedge.runtime.pipeline.wiring"]
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _private_uses(path: Path, root: Path = ROOT) -> list[str]:
    hits: list[tuple[int, int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        owner = node.value
        name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else None
        if name in OWNERS:
            hits.append((node.lineno, node.col_offset, f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}"))
    return [h for *_, h in sorted(hits)]


def test_nothing_outside_the_runtime_uses_a_backend_or_classifier_private():
    files = [p for p in (ROOT / "cnnedge").rglob("*.py") if "runtime" not in p.relative_to(ROOT / "cnnedge").parts[:1]]
    files += list((ROOT / "benchmarks").glob("*.py")) + list((ROOT / "examples").glob("*.py"))
    assert any(p.name == "runtime_bench.py" for p in files) and any(p.name == "measure.py" for p in files)
    assert [h for p in sorted(files) for h in _private_uses(p)] == []


def test_the_private_use_check_sees_the_forms_it_forbids(tmp_path):
    src = tmp_path / "x.py"
    src.write_text("be._cudart\nclf.backend._infer_impl = 1\nself.backend._lock\nclf._slots\nclf.__class__\n"
                   "be.session\nself._clf.decode\n")
    assert [h.split(": ", 1)[1] for h in _private_uses(src, tmp_path)] == [
        "be._cudart", "clf.backend._infer_impl", "self.backend._lock", "clf._slots"]


NAMEDTUPLE_API = ("_replace", "_asdict", "_fields", "_make")


def _reaches(path: Path) -> list[str]:
    """``x._attr`` where ``x`` is not ``self``/``cls``/``super()`` (the namedtuple API aside)."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and node.attr not in NAMEDTUPLE_API
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                and not (isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "super")):
            hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return hits


def _private_imports(path: Path) -> list[str]:
    """``from module import _name``: a private name taken from another module."""
    return [f"{path.relative_to(ROOT)}:{node.lineno}: {a.name}"
            for node in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(node, ast.ImportFrom)
            for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]


def _long_functions(path: Path, most: int = 80) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > most]


def test_no_module_touches_another_object_s_private_or_imports_one():
    """Slots, bound buffers, sizing, the pipeline's stages and the CLIs go through public names; argparse's
    and the stdlib's privates included."""
    files = sorted((ROOT / "cnnedge").rglob("*.py"))
    assert [h for p in files for h in _reaches(p) + _private_imports(p)] == []


def test_no_function_is_over_80_lines():
    assert [h for p in sorted((ROOT / "cnnedge").rglob("*.py")) for h in _long_functions(p)] == []


def test_the_structure_checks_see_what_they_forbid(tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    src = tmp_path / "x.py"
    src.write_text("from .decodepool import _error_text, Chunk\nbe._enter()\nself._lock\nsuper()._x\n"
                   "row._replace(a=1)\ndef f():\n" + "    pass\n" * 80)
    assert [h.split(": ", 1)[1] for h in _reaches(src)] == ["be._enter"]
    assert [h.split(": ", 1)[1] for h in _private_imports(src)] == ["_error_text"]
    assert [h.split(": ", 1)[1] for h in _long_functions(src)] == ["f 81 lines"]
