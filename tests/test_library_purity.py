"""The library never imports Kedro: only pipelines/, pipeline_registry.py and settings.py may."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "bird_bone"
KEDRO_LAYER = ("pipelines", "pipeline_registry.py", "settings.py")


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_library_modules_do_not_import_kedro():
    library = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in KEDRO_LAYER]
    assert len(library) >= 10  # the scan really sees the library
    offenders = [str(p.relative_to(PACKAGE)) for p in library if imported_roots(p) & {"kedro", "kedro_datasets"}]
    assert offenders == []


def test_scan_detects_kedro_imports(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("from kedro.io import AbstractDataset\n")
    assert "kedro" in imported_roots(sample)
