"""Extra server processes beside a running LocalPlatform: the rendered container with one thing
changed (workers, an auth-config value, an env var, a Python path), or a plain command a user
would type. Nothing in the repository is edited: each variant gets its own pod directory under
the platform's workdir, with its own copy of the secret files."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from tools.local.localplatform import EMULATOR_HOST_ENV, LocalPlatform
from k8s.secret_files import FILE_SUFFIX
from k8s.tracking import AUTH_CONFIG_FILE
from k8s.serving import ENV_CACHE_PATH
from tools.local.container import Bind
from tools.local.localize import LocalCommand, relaunched
from tools.local.processes import ManagedProcess, free_port, http_ok

READY_TIMEOUT = 240.0
EXTRAS_MOUNT = "/opt/bench-extras"  # where a variant's extra packages are mounted in the image


@dataclass
class Server:
    name: str
    url: str
    process: ManagedProcess
    command: str
    """What runs, as a user would write it (cluster form; no secrets)."""
    notes: str = ""
    ready_path: str = "/ping"
    owned: bool = True
    """Started here (stopped here); False for the platform's own processes."""
    settings: dict = field(default_factory=dict)
    score_path: str = "/invocations"
    """Where requests are posted."""
    body_format: str = "mlflow"
    """mlflow (dataframe_split JSON) or v2 (the V2 inference protocol)."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        self.process.wait_until(lambda: http_ok(self.url + self.ready_path), timeout,
                                f"{self.ready_path} answering 200")

    def stop(self) -> None:
        if self.owned:
            self.process.stop()


def _replace_flag(argv: list[str], flag: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


def _prepare(platform: LocalPlatform, workload: dict, command: LocalCommand, name: str,
             file_edit: Optional[Callable[[Path, str], str]] = None) -> None:
    """The variant's own pod directory, as the platform prepares a pod; `file_edit` changes files."""
    if file_edit:
        command = replace(command, files={path: (file_edit(path, text), mode)
                                          for path, (text, mode) in command.files.items()})
    platform.prepare_pod(workload, command, name)


def _with_python_path(env: dict[str, str], extra: Optional[Path]) -> tuple[dict[str, str], tuple[Bind, ...]]:
    """More packages importable in the image: `extra` bound at EXTRAS_MOUNT, added to PYTHONPATH."""
    if extra is None:
        return env, ()
    return ({**env, "PYTHONPATH": ":".join(part for part in (env.get("PYTHONPATH"), EXTRAS_MOUNT) if part)},
            (Bind(extra, EXTRAS_MOUNT),))


def _start(platform: LocalPlatform, name: str, argv: list[str], env: dict, cwd: Path, port: int, command: str,
           ready_path: str, notes: str, settings: dict) -> Server:
    process = ManagedProcess(name, argv, env=env, cwd=cwd, log_path=platform.logs_dir / f"{name}.log",
                             redact=platform.redact)
    process.start()
    return Server(name, f"http://127.0.0.1:{port}", process, command, notes, ready_path, True, settings)


def rendered_serving_command(platform: LocalPlatform, **flags: str) -> str:
    spec = platform.serving_container
    parts = spec["command"] + spec["args"]
    for flag, value in flags.items():
        parts = _replace_flag(parts, flag, value)
    return " ".join(parts)


def platform_serving(platform: LocalPlatform) -> Server:
    args = platform.serving_container["args"]
    return Server("serving", platform.serving_pod_url, platform.serving, rendered_serving_command(platform),
                  "the serving Deployment as rendered (plan/dev/k8s), run by LocalPlatform", "/ping", False,
                  {"workers": int(args[args.index("--workers") + 1]),
                   "max_batch_size": int(args[args.index("--max-batch-size") + 1]),
                   "max_batch_delay_ms": float(args[args.index("--max-batch-delay-ms") + 1]),
                   "middleware": True, "http": "auto (httptools)", "loop": "auto (uvloop)"})


def serving_variant(platform: LocalPlatform, name: str, *, workers: Optional[int] = None,
                    max_batch_size: Optional[int] = None, extra_pythonpath: Optional[Path] = None, notes: str = "",
                    settings: Optional[dict] = None, model_uri: Optional[str] = None,
                    env_cache: Optional[Path] = None) -> Server:
    """The rendered serving container, with --workers, --max-batch-size, --model-uri or --env-cache
    (the pod's environment volume) changed and/or more packages importable (uvicorn picks httptools
    and uvloop by itself when they are installed)."""
    port = free_port()
    command = platform.localized(platform.serving_deployment, platform.serving_container, name, port)
    argv = command.container_argv
    flags = {}
    if workers is not None:
        argv = _replace_flag(argv, "--workers", str(workers))
        flags["--workers"] = str(workers)
    if max_batch_size is not None:
        argv = _replace_flag(argv, "--max-batch-size", str(max_batch_size))
        flags["--max-batch-size"] = str(max_batch_size)
    if model_uri is not None:
        argv = _replace_flag(argv, "--model-uri", model_uri)
        flags["--model-uri"] = model_uri
    env, binds = _with_python_path(command.env, extra_pythonpath)
    if env_cache is not None:
        binds += (Bind(env_cache, ENV_CACHE_PATH, writable=True),)
    command = relaunched(command, argv, env=env, binds=binds)
    _prepare(platform, platform.serving_deployment, command, name)
    return _start(platform, name, command.argv, command.env, command.cwd, port,
                  rendered_serving_command(platform, **flags), "/ping", notes, settings or {})


def peer_env(platform: LocalPlatform, command: LocalCommand) -> dict[str, str]:
    """The serving pod's environment as a user has it for a peer server: the registry password
    exported (the pod reads it from its Secret Manager file), without the image's own packages."""
    env = {key: value for key, value in command.env.items() if key != "PYTHONPATH" and not key.endswith(FILE_SUFFIX)}
    return env | {"MLFLOW_TRACKING_PASSWORD": platform.serving_password}


def models_serve(platform: LocalPlatform, name: str, workers: int, notes: str = "", *,
                 model_uri: Optional[str] = None, env_manager: str = "local", extra_env: Optional[dict] = None) -> Server:
    """`mlflow models serve -m models:/NAME@ALIAS --env-manager local --workers N`, as a user runs it
    (same registry credentials and scratch directory as a serving pod, no mlflow_serving package);
    `extra_env` adds to its environment (where another env manager keeps its environments)."""
    port = free_port()
    command = platform.localized(platform.serving_deployment, platform.serving_container, name, port)
    env = peer_env(platform, command) | (extra_env or {})
    uri = model_uri or f"models:/{platform.model_name}@{platform.model_alias}"
    argv = ["mlflow", "models", "serve", "-m", uri, "--env-manager", env_manager,
            "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port)]
    if env_manager == "local":  # in the serving image, as the pod's own server runs
        command = relaunched(command, argv, env=env)
        argv, env = command.argv, command.env
    else:  # other env managers need this machine's pyenv and Pythons (tools/benchmarks/coldstart.py)
        argv[0] = str(platform.runtime.bin("mlflow"))
    _prepare(platform, platform.serving_deployment, command, name)
    return _start(platform, name, argv, env, command.cwd, port,
                  f"mlflow models serve -m {uri} --env-manager {env_manager} --workers {workers}", "/ping", notes,
                  {"workers": workers, "middleware": False, "http": "auto (h11)", "loop": "auto (asyncio)"})


def rendered_tracking_command(platform: LocalPlatform, **flags: str) -> str:
    spec = platform.tracking_container
    parts = list(spec["command"] + spec["args"])
    for flag, value in flags.items():
        parts = _replace_flag(parts, flag, value)
    # the allowed-hosts list is long and beside the point here
    index = parts.index("--allowed-hosts")
    parts[index + 1] = "…"
    return " ".join(parts)


def platform_tracking(platform: LocalPlatform) -> Server:
    spec = platform.tracking_container
    env = {entry["name"]: entry.get("value") for entry in spec["env"]}
    return Server("tracking", platform.tracking_pod_url, platform.tracking, rendered_tracking_command(platform),
                  "the tracking Deployment as rendered, run by LocalPlatform", "/health", False,
                  {"workers": int(spec["args"][spec["args"].index("--workers") + 1]),
                   "auth_cache_ttl_seconds": platform.auth_cache_ttl,
                   "job_execution": env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION"),
                   "http": "auto (h11)", "loop": "auto (asyncio)"})


def tracking_variant(platform: LocalPlatform, name: str, *, workers: Optional[int] = None,
                     auth_cache_ttl: Optional[int] = None, job_execution: Optional[bool] = None,
                     extra_pythonpath: Optional[Path] = None, notes: str = "") -> Server:
    """The rendered tracking container with its workers, its auth config's cache TTL (a copy of the
    ini in the variant's own pod directory) or MLFLOW_SERVER_ENABLE_JOB_EXECUTION changed."""
    port = free_port()
    command = platform.localized(platform.tracking_deployment, platform.tracking_container, name, port,
                                 extra_env={EMULATOR_HOST_ENV: platform.emulator_url})
    argv, env = command.container_argv, dict(command.env)
    flags = {}
    settings = {"workers": workers, "auth_cache_ttl_seconds": platform.auth_cache_ttl,
                "job_execution": env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION"),
                "http": "auto (h11)", "loop": "auto (asyncio)"}
    if extra_pythonpath is not None:  # `mlflow server` runs uvicorn as a child, which inherits PYTHONPATH
        settings.update({"http": "auto (httptools)", "loop": "auto (uvloop)"})
    if workers is not None:
        argv = _replace_flag(argv, "--workers", str(workers))
        flags["--workers"] = str(workers)
    else:
        settings["workers"] = int(argv[argv.index("--workers") + 1])
    file_edit = None
    if auth_cache_ttl is not None:
        settings["auth_cache_ttl_seconds"] = auth_cache_ttl

        def file_edit(path: Path, text: str) -> str:
            if path.name != AUTH_CONFIG_FILE:
                return text
            edited, count = re.subn(r"(?m)^auth_cache_ttl_seconds = \d+$",
                                    f"auth_cache_ttl_seconds = {auth_cache_ttl}", text)
            if count != 1:
                raise RuntimeError("the rendered auth config has no auth_cache_ttl_seconds line to change")
            return edited
    if job_execution is not None:
        settings["job_execution"] = env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true" if job_execution else "false"
    env, binds = _with_python_path(env, extra_pythonpath)
    command = relaunched(command, argv, env=env, binds=binds)
    _prepare(platform, platform.tracking_deployment, command, name, file_edit)
    if auth_cache_ttl is not None and not any(path.name == AUTH_CONFIG_FILE for path in command.files):
        raise RuntimeError(f"the rendered tracking pod has no {AUTH_CONFIG_FILE} file to change")
    described = rendered_tracking_command(platform, **flags)
    changes = [f"{key}={value}" for key, value in (("auth_cache_ttl_seconds", auth_cache_ttl),
                                                    ("+ httptools, uvloop", "importable" if extra_pythonpath else None),
                                                    ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", settings["job_execution"]
                                                     if job_execution is not None else None)) if value is not None]
    if changes:
        described += "  [" + ", ".join(changes) + "]"
    return _start(platform, name, command.argv, command.env, command.cwd, port, described, "/health", notes, settings)
