"""The package's layering: domain modules (the area folders and the helpers beside them) import neither Dagster
nor the Dagster layer (assets, resources, definitions, sensors, cli), and every area has its test folder."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "intent_assets"
AREAS = ("data", "privacy", "model", "serving", "loop", "deploy")
HELPERS = ("paths", "quality", "plots", "progress")
DAGSTER_LAYER = ("dagster", "intent_assets.assets", "intent_assets.resources", "intent_assets.definitions",
                 "intent_assets.sensors", "intent_assets.cli")


def _domain_modules() -> list[Path]:
    return [*(p for area in AREAS for p in sorted((PACKAGE / area).glob("*.py"))),
            *(PACKAGE / f"{name}.py" for name in HELPERS)]


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):  # also lazy and TYPE_CHECKING imports
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_every_area_is_a_package_with_its_tests():
    for area in AREAS:
        assert (PACKAGE / area / "__init__.py").is_file(), area
        assert list((PACKAGE.parent / "intent_assets_tests" / area).glob("test_*.py")), f"no tests for {area}/"
    flat = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", *HELPERS, "definitions", "resources", "sensors", "cli"}
    assert not flat, f"modules outside the area folders: {sorted(flat)}"


@pytest.mark.parametrize("path", _domain_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_domain_modules_import_no_dagster_layer(path):
    upward = [name for name in _imports(path) if any(name == top or name.startswith(top + ".") for top in DAGSTER_LAYER)]
    assert not upward, f"{path.relative_to(PACKAGE)} imports {upward}"
