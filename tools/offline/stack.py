"""Run the real program for one stack under mocks, offline, and return what it declared."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pulumi
import yaml

from infra.config import PROJECT_NAMESPACE, full_key
from tools.offline.compat import reset_root_stack
from tools.offline.mocks import MOCK_ORGANIZATION, PlatformMocks, RecordingMonitor, ResourceRecord

ROOT = Path(__file__).resolve().parents[2]
LOAD_TEST_ROOT = ROOT / "loadtest"
# Encrypted stack values cannot be decrypted offline; this stands in for each of them.
SECRET_PLACEHOLDER = "offline-placeholder-secret"


@dataclass
class StackRun:
    stack: str
    resources: list[ResourceRecord]
    outputs: dict[str, Any]
    secret_outputs: set[str]
    project: str = PROJECT_NAMESPACE
    """The Pulumi project: the platform's, or the load test's (loadtest/Pulumi.yaml)."""

    def of_type(self, type_token: str) -> list[ResourceRecord]:
        return [r for r in self.resources if r.type == type_token]

    def named(self, name: str) -> ResourceRecord:
        matches = [r for r in self.resources if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r}")
        return matches[0]


def read_stack_config(stack: str, root: Optional[Path] = None,
                      namespace: str = PROJECT_NAMESPACE) -> tuple[dict[str, str], list[str]]:
    """Config of Pulumi.<stack>.yaml as the engine passes it: full keys, string values."""
    root = root or ROOT
    path = root / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no stack file {path.name}; stacks: "
                                + ", ".join(sorted(p.name[7:-5] for p in root.glob("Pulumi.*.yaml"))))
    document = yaml.safe_load(path.read_text()) or {}
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in (document.get("config") or {}).items():
        full_key = key if ":" in key else f"{namespace}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            config[full_key] = SECRET_PLACEHOLDER
            secret_keys.append(full_key)
        elif isinstance(value, bool):
            config[full_key] = "true" if value else "false"
        elif isinstance(value, (dict, list)):
            config[full_key] = json.dumps(value)
        else:
            config[full_key] = str(value)
    return config, secret_keys


def set_path(config: dict[str, str], path: str, value: Any) -> None:
    """`pulumi config set --path mlflow-platform:PATH VALUE` on config as the engine passes it: a dotted path
    sets a field inside a structured key; a path without dots (or a full `ns:key`) sets a whole key."""
    key, _, field_path = full_key(path).partition(".")
    if not field_path:
        config[key] = value
        return
    document = json.loads(config.get(key) or "{}")
    *parents, leaf = field_path.split(".")
    node = document
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = pulumi_value(value)
    config[key] = json.dumps(document)


def pulumi_value(value: Any) -> Any:
    """What `config set --path` stores for a value typed on the command line: booleans and integers
    become JSON ones (the CLI's `coerceObject`), anything else stays text."""
    if not isinstance(value, str):
        return value
    if value in ("true", "false"):
        return value == "true"
    if value.lstrip("-").isdigit() and str(int(value)) == value:
        return int(value)
    return value


def run_program(stack: str, config: dict[str, str], secret_keys: Optional[list[str]] = None,
                program: Optional[Callable[[], dict[str, pulumi.Output]]] = None, project: str = PROJECT_NAMESPACE,
                references: Optional[dict[str, StackRun]] = None) -> StackRun:
    """Run `program` (default: the real platform) of `project` for `stack` under mocks; collect resources
    and outputs. `references`: stack name -> the run whose outputs a StackReference to it reads."""
    monitor = RecordingMonitor(PlatformMocks(
        project=config.get("gcp:project", "offline-project"),
        stack_outputs={name: (run.outputs, run.secret_outputs) for name, run in (references or {}).items()}))
    reset_root_stack()  # a fresh root Stack per run
    pulumi.runtime.set_mocks(monitor.mocks, project=project, stack=stack, preview=False, monitor=monitor,
                             organization=MOCK_ORGANIZATION)
    pulumi.runtime.set_all_config(config, secret_keys or [])

    if program is None:
        from infra.config import load_settings
        from program import PLATFORM_NAME, MlflowPlatform

        def program() -> dict[str, pulumi.Output]:
            return MlflowPlatform(PLATFORM_NAME, load_settings()).outputs

    outputs: dict[str, Any] = {}
    secret_outputs: set[str] = set()

    async def collect(declared: dict[str, pulumi.Output]) -> None:
        for name, value in declared.items():
            output = pulumi.Output.from_input(value)
            outputs[name] = await output.future()
            if await output.is_secret():
                secret_outputs.add(name)

    @pulumi.runtime.test
    def run():
        return collect(program())

    run()
    return StackRun(stack=stack, resources=list(monitor.records), outputs=outputs, secret_outputs=secret_outputs,
                    project=project)


def run_stack(stack: str, root: Optional[Path] = None, overrides: Optional[dict[str, Any]] = None) -> StackRun:
    """The program for a stack file, with `overrides` set as `pulumi config set --path` would."""
    config, secret_keys = read_stack_config(stack, root)
    for path, value in (overrides or {}).items():
        set_path(config, path, value)
    return run_program(stack, config, secret_keys)


def run_load_test_stack(stack: str, overrides: Optional[dict[str, str]] = None) -> StackRun:
    """The load-test project's stack (loadtest/Pulumi.<stack>.yaml) under mocks, its StackReference answered
    by the outputs of the platform stack it names, itself run under mocks."""
    from loadtest.stack.rig import build_load_test
    from loadtest.stack.settings import PROJECT_NAMESPACE as LOAD_TEST_NAMESPACE, load_settings, settings_from_values

    config, secret_keys = read_stack_config(stack, LOAD_TEST_ROOT, LOAD_TEST_NAMESPACE)
    config.update(overrides or {})
    platform_stack = settings_from_values(config).platform_stack_for(MOCK_ORGANIZATION, stack)
    platform = run_stack(platform_stack.rsplit("/", 1)[-1])
    return run_program(stack, config, secret_keys, lambda: build_load_test(load_settings()),
                       project=LOAD_TEST_NAMESPACE, references={platform_stack: platform})
