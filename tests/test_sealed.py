"""What ships is sealed: the program (`__main__.py`, `program.py`, `infra/`, `k8s/`) and the images'
code (`mlflow_image/`) import nothing from the tooling that proves or operates them.

`pulumi up` runs the program with only requirements.txt installed, and an image holds only what its
Dockerfile copies, so an import of `tools`, `loadtest` or `tests` from either fails in the cloud while
every offline test passes (the test runner has all of them on its path).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ("__main__.py", "program.py", "infra", "k8s")
PROGRAM_MODULES = {"program", "infra", "k8s"}
IMAGE = "mlflow_image"


def python_files(root: Path, parts: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for part in parts:
        path = root / part
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every absolute import in the file, those inside functions included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def required_distributions(requirements: Path) -> set[str]:
    names = set()
    for line in requirements.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line.strip())
        if match:
            names.add(normalized(match.group(1)))
    return names


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def foreign_program_imports(root: Path) -> list[str]:
    """Imports of the program that are neither stdlib, the program itself, nor a distribution
    requirements.txt installs, as `file: module`."""
    declared = required_distributions(root / "requirements.txt")
    providers = importlib.metadata.packages_distributions()
    foreign = []
    for path in python_files(root, PROGRAM):
        for module in sorted(imported_modules(path)):
            if module in sys.stdlib_module_names or module in PROGRAM_MODULES or module == "__future__":
                continue
            if not {normalized(d) for d in providers.get(module, ())} & declared:
                foreign.append(f"{path.relative_to(root)}: {module}")
    return foreign


def foreign_image_imports(root: Path) -> list[str]:
    """Imports of the images' code that name a top-level folder or module of this repository other
    than the image's own packages: none of those is in the image."""
    own = {p.name for p in (root / IMAGE).iterdir() if (p / "__init__.py").exists()}
    repository = {p.stem for p in root.iterdir() if p.suffix == ".py" or (p.is_dir() and not p.name.startswith("."))}
    foreign = []
    for path in python_files(root, (IMAGE,)):
        for module in sorted(imported_modules(path) & (repository - own)):
            foreign.append(f"{path.relative_to(root)}: {module}")
    return foreign


def test_the_program_imports_only_itself_the_stdlib_and_its_requirements():
    assert foreign_program_imports(ROOT) == []


def test_the_images_code_imports_nothing_of_the_repository_outside_the_image():
    assert foreign_image_imports(ROOT) == []


@pytest.fixture
def product_copy(tmp_path: Path) -> Path:
    for part in (*PROGRAM, IMAGE, "requirements.txt"):
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / part)
    for tooling in ("tools", "loadtest", "tests"):
        (tmp_path / tooling).mkdir()
    return tmp_path


def test_a_program_module_reaching_into_tooling_is_named(product_copy: Path):
    serving = product_copy / "k8s" / "serving.py"
    serving.write_text(serving.read_text() + "\n\ndef late():\n    from tools.ops import stack\n    return stack\n")
    assert set(foreign_program_imports(product_copy)) - set(foreign_program_imports(ROOT)) == {
        "k8s/serving.py: tools"}


def test_a_program_dependency_missing_from_requirements_is_named(product_copy: Path):
    requirements = product_copy / "requirements.txt"
    requirements.write_text("\n".join(line for line in requirements.read_text().splitlines()
                                      if not line.startswith("pydantic==")))
    assert "infra/config.py: pydantic" in foreign_program_imports(product_copy)


def test_image_code_importing_the_program_or_tooling_is_named(product_copy: Path):
    app = product_copy / IMAGE / "mlflow_serving" / "app.py"
    app.write_text("import loadtest.payloads\nfrom infra import naming\n" + app.read_text())
    assert set(foreign_image_imports(product_copy)) - set(foreign_image_imports(ROOT)) == {
        "mlflow_image/mlflow_serving/app.py: infra", "mlflow_image/mlflow_serving/app.py: loadtest"}
