"""`make fuzz` runs `-m fuzz`: every test module that scales with IRA_FUZZ_EXAMPLES carries it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _marks_fuzz(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            return "pytest.mark.fuzz" in ast.unparse(node.value)
    return False


def test_every_module_that_scales_with_ira_fuzz_examples_is_marked_fuzz() -> None:
    scaled = [p for p in ROOT.rglob("test_*.py") if "IRA_FUZZ_EXAMPLES" in p.read_text()]
    scaled.remove(Path(__file__))
    assert len(scaled) >= 9
    unmarked = [
        str(p.relative_to(ROOT)) for p in scaled if not _marks_fuzz(ast.parse(p.read_text()))
    ]
    assert unmarked == []
