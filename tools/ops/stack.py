"""A stack's outputs, read once through Pulumi's Automation API (what `pulumi stack output
--json --show-secrets` prints; the CLI must be installed and logged in to the stack's backend)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pulumi import automation as auto

ROOT = Path(__file__).resolve().parents[2]


class StackOutputError(RuntimeError):
    """The outputs could not be read, or one is missing or malformed; never holds a value."""


@dataclass(frozen=True)
class StackOutputs:
    stack: str
    values: Mapping[str, Any]

    @classmethod
    def read(cls, stack: str, work_dir: Path = ROOT) -> "StackOutputs":
        try:
            outputs = auto.LocalWorkspace(work_dir=str(work_dir)).stack_outputs(stack)
        except FileNotFoundError:
            raise StackOutputError("the Pulumi CLI is not on PATH: the cluster target reads the stack's "
                                   "outputs with it") from None
        except auto.CommandError as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            detail = lines[-1].removeprefix("stderr:").strip() if lines else str(err)  # the CLI's own message
            raise StackOutputError(f"reading stack {stack}'s outputs failed: {detail}") from None
        return cls(stack, {name: output.value for name, output in outputs.items()})

    def get(self, name: str) -> Any:
        if name not in self.values:
            raise StackOutputError(f"stack {self.stack} has no output {name!r} (has {', '.join(sorted(self.values))}): "
                                   "run `pulumi up` with this version of the program")
        return self.values[name]

    def json(self, name: str) -> Any:
        """An output that is a JSON document, whether Pulumi holds it as text or as an object."""
        value = self.get(name)
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            raise StackOutputError(f"stack {self.stack} output {name} is not JSON") from None

    def deployment(self, component: str) -> tuple[str, str]:
        """(namespace, name) of the tracking or serving Deployment: output `<component>_deployment`."""
        return self.namespaced(f"{component}_deployment")

    def namespaced(self, output: str) -> tuple[str, str]:
        """(namespace, name) of an output `NAMESPACE/NAME`."""
        namespace, _, name = str(self.get(output)).partition("/")
        if not namespace or not name:
            raise StackOutputError(f"stack {self.stack} output {output} is not NAMESPACE/NAME")
        return namespace, name

    def kubeconfig(self, cluster: str) -> dict:
        """The kubeconfig of the `platform` or `serving` cluster: output `<cluster>_kubeconfig`."""
        return self.json(f"{cluster}_kubeconfig")
