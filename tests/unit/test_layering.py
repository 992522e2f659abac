"""Imports go down the layers only, never up (read from the source, without importing it).

    protos                  generated code: imports none of ours
    cluster                 the servers: protos
    fusefs                  the FUSE driver: protos and cluster.common (shared helpers), never
                            a server's code
    mount                   (mount.py) fusefs, cluster.common, protos
    tools                   the `kelp` CLI: everything above, but not bench
    bench                   may import anything; `kelp bench` runs it as a child process
                            (`python -m bench.run`), so tools never imports it

Nothing imports tests. Every import counts, also one inside a function.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("protos", "cluster", "fusefs", "mount", "tools", "bench", "tests")

# module -> the modules of ours it may import (a prefix match on dotted names).
ALLOWED = {
    "protos": ("protos",),
    "cluster": ("cluster", "protos"),
    "fusefs": ("fusefs", "protos", "cluster.common"),
    "mount": ("fusefs", "protos", "cluster.common"),
    "tools": ("tools", "mount", "fusefs", "protos", "cluster"),
    "bench": ("bench", "tools", "mount", "fusefs", "protos", "cluster"),
}


def sources(layer: str) -> list[Path]:
    if layer == "mount":
        return [ROOT / "mount.py"]
    return sorted((ROOT / layer).rglob("*.py"))


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every absolute import of one of our modules in path."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from cluster import master` imports cluster.master (a module or a name in it)
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in OURS]
    return found


def allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_go_down_only(layer):
    bad = [f"{path.relative_to(ROOT)}:{line}: imports {name}"
           for path in sources(layer) for line, name in imported(path)
           if not allowed(name, ALLOWED[layer])]
    assert not bad, f"{layer} may import only {', '.join(ALLOWED[layer])}:\n" + "\n".join(bad)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from bench import run\n    import tools.cli\n"
                   "from cluster import master\n")
    assert sorted(imported(src)) == [(2, "bench.run"), (3, "tools.cli"), (4, "cluster.master")]
