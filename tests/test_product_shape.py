"""The product's code stays readable: no function in program.py, infra/ or k8s/ over MAX_LINES.

`python -m tests.test_product_shape` prints the longest functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("program.py", "infra", "k8s")
MAX_LINES = 60


def product_files(root: Path = ROOT) -> list[Path]:
    return sorted(path for part in PRODUCT for path in
                  ([root / part] if part.endswith(".py") else (root / part).rglob("*.py")))


def function_lengths(path: Path) -> list[tuple[int, str]]:
    """(lines from `def` to the last line, "file:line name") of every function and method in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.end_lineno - node.lineno + 1, f"{path.name}:{node.lineno} {node.name}")
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def long_functions(paths: list[Path], limit: int = MAX_LINES) -> list[tuple[int, str]]:
    return sorted((entry for path in paths for entry in function_lengths(path) if entry[0] > limit), reverse=True)


def test_no_product_function_is_longer_than_the_limit():
    too_long = long_functions(product_files())
    assert not too_long, f"functions over {MAX_LINES} lines; split them into short, named steps: {too_long}"


def test_the_check_finds_a_long_function(tmp_path):
    source = tmp_path / "long.py"
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_LINES))
    source.write_text(f"def short():\n    return 1\n\n\nclass C:\n    def long(self):\n{body}")
    assert long_functions([source]) == [(MAX_LINES + 1, "long.py:6 long")]


def test_the_check_reads_every_product_folder():
    names = {path.relative_to(ROOT).parts[0] for path in product_files()}
    assert names == {"program.py", "infra", "k8s"}


if __name__ == "__main__":
    for length, where in sorted((e for p in product_files() for e in function_lengths(p)), reverse=True)[:10]:
        print(f"{length:4} {where}")
