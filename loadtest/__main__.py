"""The load-test stack's program (loadtest/Pulumi.yaml): settings, then the rig. Pulumi runs it with this
folder as the working directory, for the program and its providers alike: the Locust image's build
context is `.` (loadtest/stack/rig.py)."""

import sys
from pathlib import Path

import pulumi

# The repository root: this project imports the platform's modules (never the reverse).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.stack.rig import build_load_test  # noqa: E402
from loadtest.stack.settings import load_settings  # noqa: E402

for name, value in build_load_test(load_settings()).items():
    pulumi.export(name, value)
