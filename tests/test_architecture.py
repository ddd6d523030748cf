"""The parts of edgemed import each other only in the directions docs/architecture.md draws.

Every module under src/edgemed is parsed (ast), every `import edgemed…` in it is collected —
lazy imports inside functions too — and checked against two rules:

1. A part imports only the parts its row of `ALLOWED` names (the table in docs/architecture.md).
2. No part imports another part's private module (`edgemed.io._volume` from `edgemed.models`):
   what crosses a boundary is in the other part's `__init__` and `__all__`. The top-level
   `edgemed._atomic`, `edgemed._deps`, `edgemed._ndimage` and `edgemed._threads` are the shared core and exempt.

A third test keeps raw manifest metadata inside `edgemed.artifacts`: elsewhere, code reads the
typed records (`ckpt.meta.validation.dice`), never `…metadata["validation"]`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "edgemed"
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

# The shared core every part may import: errors, the version, atomic writes, lazy imports, numpy filters.
CORE = frozenset({"errors", "__init__", "__version__", "_atomic", "_deps", "_ndimage", "_threads"})

# part → the parts it may import (besides itself and CORE). Lower layers first.
ALLOWED: dict[str, frozenset[str]] = {
    "artifacts": frozenset(),
    "profiles": frozenset(),
    "metrics": frozenset(),
    "io": frozenset({"artifacts"}),
    "phantom": frozenset({"io"}),
    "runtime": frozenset({"artifacts", "io"}),
    "models": frozenset({"artifacts", "io", "runtime"}),
    "measure": frozenset({"artifacts", "io", "runtime", "profiles", "metrics", "phantom"}),
    "compress": frozenset({"artifacts", "io", "runtime", "models", "measure", "metrics"}),
    "export": frozenset({"artifacts", "io", "runtime", "models", "profiles", "phantom"}),
    "serve": frozenset({"artifacts", "io", "runtime"}),
    "pipeline": frozenset({"artifacts", "io", "runtime", "models", "measure", "profiles", "metrics", "compress",
                           "export"}),
    "testing": frozenset({"artifacts", "runtime", "measure"}),
    "bench": frozenset({"measure"}),
    "cli": frozenset({"artifacts", "io", "runtime", "models", "measure", "profiles", "metrics", "phantom", "compress",
                      "export", "pipeline", "serve"}),
    "__main__": frozenset({"cli"}),
}


def _part(dotted: str) -> str:
    """The part a module belongs to: 'edgemed.io._read' → 'io', 'edgemed' → '__init__'."""
    pieces = dotted.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        dotted = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        out.append((dotted.removesuffix(".__init__"), path))
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every absolute edgemed import, `from edgemed import x` as 'edgemed.x'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("edgemed.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "edgemed":
                found += [(node.lineno, f"edgemed.{a.name}") for a in node.names]
            elif node.module.startswith("edgemed."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}:{node.lineno}: relative import; edgemed uses absolute imports only")
    return found


def _violations() -> tuple[list[str], list[str]]:
    direction, private = [], []
    for dotted, path in _modules():
        me = _part(dotted)
        for line, target in _imports(path):
            other = _part(target)
            if other == me or other in CORE:
                continue
            if other not in ALLOWED.get(me, frozenset()):
                direction.append(f"{path.relative_to(SRC.parent)}:{line}: {me} → {other} ({target})")
            if any(p.startswith("_") for p in target.split(".")[2:]):
                private.append(f"{path.relative_to(SRC.parent)}:{line}: {target}")
    return direction, private


def test_every_part_is_in_the_table() -> None:
    parts = {_part(d) for d, _ in _modules()} - CORE
    assert parts <= set(ALLOWED), f"parts missing from ALLOWED (and docs/architecture.md): {parts - set(ALLOWED)}"


def test_imports_follow_the_declared_directions() -> None:
    direction, _ = _violations()
    assert not direction, "imports against the table in docs/architecture.md:\n" + "\n".join(direction)


def test_no_private_module_is_imported_across_parts() -> None:
    _, private = _violations()
    assert not private, "private modules imported from another part (export the name instead):\n" + "\n".join(private)


def test_no_raw_metadata_outside_artifacts() -> None:
    raw = re.compile(r"\.metadata\[|\.metadata\.get\(|\bmetadata\[\"|dict\(\w+\.metadata\)")
    hits = []
    for dotted, path in _modules():
        if _part(dotted) == "artifacts":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if raw.search(line):
                hits.append(f"{path.relative_to(SRC.parent)}:{n}: {line.strip()}")
    assert not hits, "raw manifest metadata read outside edgemed.artifacts (use the typed .meta):\n" + "\n".join(hits)


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_the_architecture_doc_states_each_row_of_the_table(part: str) -> None:
    """docs/architecture.md has a row per part listing exactly what the test allows."""
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| ([^|]*) \|", DOC.read_text(), re.M)}
    assert part in rows, f"docs/architecture.md has no row for `{part}`"
    stated = {p.strip(" `") for p in rows[part].split(",") if p.strip(" `—-")}
    assert stated == set(ALLOWED[part]), f"`{part}`: the doc says {sorted(stated)}, the test {sorted(ALLOWED[part])}"
