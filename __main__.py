"""Entry point of `pulumi up`: settings -> platform -> outputs."""

import pulumi

from infra.config import load_settings
from program import build_platform

for output_name, value in build_platform(load_settings()).items():
    pulumi.export(output_name, value)
