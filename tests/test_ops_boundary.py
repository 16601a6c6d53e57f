"""tools/ops acts on a platform through tools.ops.interfaces: only the `make local` adapter
(tools/ops/local.py) may import the local platform (tools.local), at any depth of the module."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCAL_ADAPTER = "local.py"

pytestmark = pytest.mark.unit


def local_platform_imports(ops_dir: Path) -> list[str]:
    """`file:line module` of every import of tools.local in tools/ops outside the local adapter,
    whether at the top of the module or inside a function."""
    found = []
    for path in sorted(ops_dir.glob("*.py")):
        if path.name == LOCAL_ADAPTER:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            hits = [m for m in modules if m == "tools.local" or m.startswith("tools.local.")]
            found += [f"{path.name}:{node.lineno} {hit}" for hit in hits[:1]]
    return found


def test_ops_imports_the_local_platform_only_in_its_adapter():
    assert local_platform_imports(ROOT / "tools" / "ops") == []


def test_a_hidden_import_of_the_local_platform_is_caught(tmp_path):
    ops = tmp_path / "ops"
    shutil.copytree(ROOT / "tools" / "ops", ops)
    promote = ops / "promote.py"
    promote.write_text(promote.read_text() + "\n\ndef runtime_python():\n"
                                             "    from tools.local.localplatform import LocalPlatform\n")
    (ops / "rollout.py").write_text((ops / "rollout.py").read_text() + "\nimport tools.local.rollout\n")
    (ops / "verify.py").write_text((ops / "verify.py").read_text() + "\nfrom tools import local\n")
    found = local_platform_imports(ops)
    assert [hit.split(" ", 1)[1] for hit in found] == ["tools.local.localplatform", "tools.local.rollout",
                                                       "tools.local"]


def test_choosing_a_target_loads_the_local_platform_only_for_local():
    probe = ("import sys, argparse; from tools.ops import targets; "
             "print(sorted(m for m in sys.modules if m.startswith('tools.local')))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
