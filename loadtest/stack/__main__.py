"""The load-test stack's program (loadtest/Pulumi.yaml: `main: stack/`): settings, then the rig."""

import os
import sys
from pathlib import Path

import pulumi

# The repository root: this project imports the platform's modules (never the reverse), and names the
# Locust image's build context from there, as the platform names its own.
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)

from loadtest.stack.rig import build_load_test  # noqa: E402
from loadtest.stack.settings import load_settings  # noqa: E402

for name, value in build_load_test(load_settings()).items():
    pulumi.export(name, value)
