"""Entry point of `pulumi up`: settings -> platform -> outputs."""

import pulumi

from infra.config import load_settings
from program import PLATFORM_NAME, MlflowPlatform

for output_name, value in MlflowPlatform(PLATFORM_NAME, load_settings()).outputs.items():
    pulumi.export(output_name, value)
