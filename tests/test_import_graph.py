"""docs/architecture.md's Layers table, enforced on the import graph of ``edgeseg/``.

The table is the one source: its rows are read from the doc. Every ``import`` statement of a project module
(at module level, under ``TYPE_CHECKING`` or inside a function: a lazy import is still an arrow) must point to a
lower layer, or to a unit to its left in the same row, or stay inside its own unit (a package, or layer 0's
modules, which import each other). Module docstrings that name a layer must name the table's.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgeseg"
DOC = ROOT / "docs" / "architecture.md"


def layer_table() -> list[tuple[int, list[str]]]:
    """(layer, the backticked units of the row's modules column, in order) for each row of the Layers table."""
    section = DOC.read_text(encoding="utf-8").split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            rows.append((int(cells[0]), re.findall(r"`([^`]+)`", cells[1])))
    return rows


def ranks() -> dict[str, tuple[int, int]]:
    """unit -> (layer, position in its row); layer 0's modules share one position (they import each other)."""
    table: dict[str, tuple[int, int]] = {}
    for layer, units in layer_table():
        for position, unit in enumerate(units):
            assert unit not in table, f"{unit} is listed twice in the Layers table"
            table[unit] = (layer, 0 if layer == 0 else position)
    return table


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
    """edgeseg.runtime.trt -> 'runtime/', edgeseg.spec -> 'spec', edgeseg -> '__init__'."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1] + "/" if (PACKAGE / parts[1]).is_dir() else parts[1]


class Arrow(NamedTuple):
    """``source`` imports ``target`` at ``line`` of its file."""

    source: str
    target: str
    line: int


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The project modules an import statement loads (a name imported from a package is its module if it is one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "edgeseg"]
    if node.level:
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != "edgeseg":
        return []
    found = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
    return found if len(found) == len(node.names) else [base, *found]


def imports_in(module: str, source: str) -> list[Arrow]:
    """Every import of a project module in ``source`` (the text of ``module``), wherever the statement is."""
    return [Arrow(module, target, node.lineno) for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.Import, ast.ImportFrom)) for target in _targets(module, node)]


def arrows() -> list[Arrow]:
    return [arrow for module, path in MODULES.items() for arrow in imports_in(module, path.read_text(encoding="utf-8"))]


def test_the_table_places_every_module_once() -> None:
    listed = ranks()
    actual = {unit_of(m) for m in MODULES}
    assert not actual - set(listed), f"add these to docs/architecture.md's Layers table: {sorted(actual - set(listed))}"
    assert not set(listed) - actual, f"the Layers table lists what edgeseg/ lacks: {sorted(set(listed) - actual)}"


def test_every_import_points_down_the_layer_table() -> None:
    table = ranks()
    wrong = []
    for arrow in arrows():
        source, target = unit_of(arrow.source), unit_of(arrow.target)
        if table[target] > table[source]:  # equal: the same unit, or two of layer 0's modules
            wrong.append(f"{MODULES[arrow.source].relative_to(ROOT)}:{arrow.line} imports {arrow.target} "
                         f"(layer {table[source][0]} {source} -> layer {table[target][0]} {target})")
    assert not wrong, "imports that run back up docs/architecture.md's Layers table:\n" + "\n".join(wrong)


def test_the_walk_sees_lazy_typing_and_relative_imports() -> None:
    source = """
from typing import TYPE_CHECKING
import numpy as np
from .. import __version__
from ..errors import ConfigError
from . import trt, cuda
if TYPE_CHECKING:
    from ..pipeline.bench import BenchResult
class Segmenter:
    def from_artifacts(self):
        from ..quant.lint import check_qdq
        import edgeseg.report.plots
"""
    found = {(a.target, a.line) for a in imports_in("edgeseg.runtime.segmenter", source)}
    assert found == {("edgeseg", 4), ("edgeseg.errors", 5), ("edgeseg.runtime.trt", 6), ("edgeseg.runtime.cuda", 6),
                     ("edgeseg.pipeline.bench", 8), ("edgeseg.quant.lint", 11), ("edgeseg.report.plots", 12)}
    assert [unit_of(m) for m in ("edgeseg", "edgeseg.spec", "edgeseg.runtime.trt")] == ["__init__", "spec", "runtime/"]
    assert ("edgeseg.pipeline.build", "edgeseg.report.writer") in {(a.source, a.target) for a in arrows()}


def test_module_docstrings_name_the_table_s_layer() -> None:
    table = ranks()
    wrong = []
    for module, path in MODULES.items():
        summary = (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "").split("\n\n", 1)[0]
        named = re.search(r"\(layer (\d)\b", summary)
        if named and int(named.group(1)) != table[unit_of(module)][0]:
            wrong.append(f"{path.relative_to(ROOT)} says layer {named.group(1)}, the table "
                         f"{table[unit_of(module)][0]}")
    assert not wrong, "\n".join(wrong)


def test_ros_code_that_needs_rclpy_stays_in_ros2() -> None:
    # docs/architecture.md: ROS messages and bags are runtime code (no rclpy); the node is ros2/, imported by nothing
    outside = [f"{MODULES[a.source].relative_to(ROOT)}:{a.line}" for a in arrows()
               if a.target.startswith("edgeseg.ros2") and not a.source.startswith("edgeseg.ros2")]
    rclpy = [f"{path.relative_to(ROOT)}:{node.lineno}" for module, path in MODULES.items()
             if not module.startswith("edgeseg.ros2")
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if "rclpy" in _library_names(node)]
    assert not outside and not rclpy, (outside, rclpy)


def _library_names(node: ast.AST) -> set[str]:
    """The top-level names an import statement loads (``import a.b`` -> a, ``from a.b import c`` -> a)."""
    if isinstance(node, ast.Import):
        return {alias.name.split(".")[0] for alias in node.names}
    if isinstance(node, ast.ImportFrom) and not node.level and node.module:
        return {node.module.split(".")[0]}
    return set()
