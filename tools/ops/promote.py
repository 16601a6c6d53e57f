"""Promote a registered model version to a serving alias, or roll the alias back, and roll serving.

    python -m tools.ops.promote --model NAME --version N --alias ALIAS [--require 'accuracy>=0.9' ...]
    python -m tools.ops.promote --model NAME --alias ALIAS --rollback
        [--target local|cluster] [--stack dev] [--workdir .local] [--tracking-uri URL] [--timeout S]

In order, stopping at the first failure:
 1. the model exists and the version exists and is READY (for --rollback: the alias is set and
    a previous version is recorded, and that version is READY);
 2. every --require gate holds on the latest value of that metric in the version's run
    (operators >= > <= < ==); a failed gate changes nothing;
 3. the version is rehearsed as a serving pod loads it (tools.ops.verify: its recorded environment
    restored with the serving image's settings, the model loaded); one that would not serve
    changes nothing;
 4. the serving user gets READ on the model and its experiments, the drift job's user (if the stack
    has it) EDIT on the model and READ on the experiments (the serving-user Job's logic,
    tools.ops.grants, in the runtime virtualenv);
 5. the alias moves; the registered-model tag `mlflow.promote.previous.<ALIAS>` records the
    version it pointed to before (a rollback swaps the two, so a second rollback rolls forward);
 6. serving rolls and is waited for: `local` asks the running `make local` (SIGUSR1), `cluster`
    patches the serving Deployment's `mlflow.org/rollout-token` annotation and waits for the
    rollout; then the version's serving input example (or --request FILE) is sent to serving and
    must be answered 200 with predictions. If serving is not ready in time or does not answer so,
    the alias and the tag are put back, serving is rolled back onto them, and the command fails.

Targets (tools.ops.targets): `local` reads WORKDIR/endpoints.json of a running `make local`
(tools/ops/local.py). `cluster` (tools/ops/gke.py) talks to the tracking URL given by --tracking-uri
or MLFLOW_TRACKING_URI (a port-forward; the ingress only without IAP: behind IAP it takes no password), as MLFLOW_TRACKING_USERNAME/PASSWORD or else
the stack's admin outputs, and to the serving Deployment named by the stack output
`serving_deployment`, through `serving_kubeconfig` (the outputs are read with Pulumi's Automation
API, which needs the Pulumi CLI).

With --strategy canary (a stack with `serving.challenger`), steps 1-3 as above, then: the version is
served by the challenger track (its alias moved, its pods rolled); traffic shifts to it step by step
(--steps, default `serving.canary.steps`) and each step is judged on both tracks' error rate (answers >= 400) and p99
(tools.ops.canary); once the last step (100%) passes, steps 4-6 move ALIAS the rolling way, the route
goes back to what the settings declare and the challenger's alias back to its previous version (or
the promoted one, if it had none). On a breach all traffic goes back to the champion at once, ALIAS
is left where it was, the challenger is retired the same way, and the command exits 6 with the
reason and both tracks' numbers. Ctrl-C or SIGTERM during the steps also sends all traffic back to the
champion first, then exits 7 with the challenger's alias still on the version (no traffic).

Exit codes: 0 promoted, 1 error (nothing changed), 2 usage, 3 gate failed (nothing changed),
4 rollout failed (alias and tag restored), 5 the version would not serve (nothing changed),
6 the canary breached and was rolled back (ALIAS unchanged), 7 stopped part-way (interrupted by
Ctrl-C or SIGTERM, or a change after another failed): the message says what changed and what to run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Protocol, Sequence

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from k8s.drift import DRIFT_USERNAME
from tools.ops import targets
from tools.ops.canary import AbortFailed, CanaryBreach, Thresholds, parse_steps, run_steps
from tools.ops.interfaces import (
    ChallengerTarget, PromotionTarget, RehearsalFailed, Roller, RolloutError, TargetError, Tracking, Verifier,
)
from tools.ops.notify import promotion_notice
from tools.ops.lease import holding
from tools.ops.runtime import AdminRunner
from tools.venvs import VenvError

READY = "READY"
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
PREVIOUS_TAG = "mlflow.promote.previous.{alias}"
EXIT_ERROR, EXIT_USAGE, EXIT_GATE, EXIT_ROLLOUT, EXIT_REHEARSAL, EXIT_CANARY, EXIT_PARTLY = 1, 2, 3, 4, 5, 6, 7
NO_CHALLENGER = ("this stack declares no challenger track (setting serving.challenger): `pulumi config set --path "
                 "serving.challenger.alias challenger` and `pulumi up` (locally: render the plan with it, "
                 "`make plan`, and restart `make local`)")
GRANT_TIMEOUT = 180.0


def previous_tag(alias: str) -> str:
    return PREVIOUS_TAG.format(alias=alias)


class PromotionError(RuntimeError):
    exit_code = EXIT_ERROR


class GateFailed(PromotionError):
    exit_code = EXIT_GATE


class RolloutFailed(PromotionError):
    exit_code = EXIT_ROLLOUT


class WouldNotServe(PromotionError):
    exit_code = EXIT_REHEARSAL


class CanaryRolledBack(PromotionError):
    exit_code = EXIT_CANARY


class PartlyDone(PromotionError):
    """Stopped part-way (interrupted, or a step after a change failed): the message says what changed."""
    exit_code = EXIT_PARTLY


# --- gates ----------------------------------------------------------------------------------------
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b, "==": lambda a, b: a == b,
}
_REQUIREMENT = re.compile(r"^\s*(?P<metric>[A-Za-z0-9_.\-/ ]*?[A-Za-z0-9_.\-/])\s*(?P<op>>=|<=|==|>|<)\s*"
                          r"(?P<threshold>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Requirement:
    metric: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> "Requirement":
        match = _REQUIREMENT.match(text)
        if not match:
            raise ValueError(f"--require {text!r}: expected METRIC OP NUMBER with OP one of "
                             f"{' '.join(_OPERATORS)}, e.g. 'accuracy>=0.9'")
        return cls(match["metric"], match["op"], float(match["threshold"]))

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


# --- the registry and the serving user --------------------------------------------------------------
class Registry(Protocol):
    """The calls of MLflow's `MlflowClient` a promotion makes; errors are MlflowException."""

    def get_registered_model(self, name: str): ...
    def get_model_version(self, name: str, version: str): ...
    def get_run(self, run_id: str): ...
    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None: ...
    def delete_registered_model_alias(self, name: str, alias: str) -> None: ...
    def set_registered_model_tag(self, name: str, key: str, value: str) -> None: ...
    def delete_registered_model_tag(self, name: str, key: str) -> None: ...


def registry_client(tracking_uri: str, username: str, password: str) -> MlflowClient:
    """MLflow's client for `tracking_uri` as `username`. It reads basic-auth credentials from the
    environment only, so this sets them for the process."""
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = username, password
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


class Granter(Protocol):
    def grant(self, model: str) -> str:
        """Give the serving user READ on the model and its experiments; return a summary."""


class RuntimeGranter:
    """`python -m tools.ops.grants` in the runtime virtualenv (MLflow's auth client), as tracking's admin."""

    def __init__(self, runner: AdminRunner, serving_user: str, timeout: float = GRANT_TIMEOUT):
        self.runner, self.serving_user, self.timeout = runner, serving_user, timeout

    def command(self, model: str) -> list[str]:
        return ["-m", "tools.ops.grants", "--model", model, "--user", self.serving_user, "--drift-user", DRIFT_USERNAME]

    def grant(self, model: str) -> str:
        try:
            result = self.runner.run_module(self.command(model), f"granting READ to {self.serving_user!r} on {model!r}",
                                            self.timeout)
        except VenvError as err:
            raise PromotionError(str(err)) from None
        drift = f"; {result['drift_user']} EDIT on it" if result["drift_user"] else ""
        return f"{result['user']} has READ on model {model!r} and experiments {result['experiments']}{drift}"


def as_admin(tracking: Tracking) -> tuple[MlflowClient, RuntimeGranter]:
    """The registry as tracking's admin, and the granter of READ to the serving user."""
    registry = registry_client(tracking.uri, tracking.username, tracking.password)
    return registry, RuntimeGranter(AdminRunner(tracking.uri, tracking.username, tracking.password),
                                    tracking.serving_user)


# --- promotion -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    model: str
    alias: str
    version: str
    previous: Optional[str]
    rollout: str


def registered_model(registry: Registry, name: str):
    try:
        return registry.get_registered_model(name)
    except MlflowException as err:
        if err.error_code == NOT_FOUND:
            raise PromotionError(f"registered model {name!r} does not exist") from None
        raise PromotionError(f"reading registered model {name!r}: {err}") from None


def ready_version(registry: Registry, name: str, version: str):
    try:
        mv = registry.get_model_version(name, version)
    except MlflowException as err:
        if err.error_code == NOT_FOUND:
            raise PromotionError(f"model {name!r} has no version {version}") from None
        raise PromotionError(f"reading model {name!r} version {version}: {err}") from None
    if mv.status != READY:
        raise PromotionError(f"model {name!r} version {version} is {mv.status or 'in no known state'}, "
                             f"not {READY}: wait until its registration finishes")
    return mv


def check_gates(registry: Registry, mv, requirements: Sequence[Requirement]) -> list[str]:
    """Each gate on the version's run; raises before anything changes."""
    if not requirements:
        return []
    where = f"model {mv.name!r} version {mv.version}"
    if not mv.run_id:
        raise PromotionError(f"{where} has no run: no metric to check {', '.join(map(str, requirements))}")
    metrics = registry.get_run(mv.run_id).data.metrics  # the latest value of each
    passed = []
    for requirement in requirements:
        if requirement.metric not in metrics:
            known = ", ".join(sorted(metrics)) or "none"
            raise PromotionError(f"unknown metric {requirement.metric!r}: run {mv.run_id} of {where} "
                                 f"logged {known}")
        value = metrics[requirement.metric]
        if not requirement.holds(value):
            raise GateFailed(f"gate failed: {requirement.metric} = {value:g} is not {requirement.op} "
                             f"{requirement.threshold:g} (run {mv.run_id} of {where}); nothing changed")
        passed.append(f"{requirement.metric} = {value:g} {requirement.op} {requirement.threshold:g}")
    return passed


def _rehearse(verifier: Optional[Verifier], model: str, version: str, request: Optional[dict],
              log: Callable[[str], None]) -> Optional[Callable[[], str]]:
    """Rehearse the version as a serving pod would load it; the probe of its answers after the rollout."""
    if verifier is None:
        return None
    try:
        rehearsed = verifier.rehearse(model, version)
    except RehearsalFailed as err:
        raise WouldNotServe(f"model {model!r} version {version} would not serve: {err}; nothing changed, "
                            "serving keeps its version") from None
    log(f"rehearsal of version {version}: {rehearsed.summary}")
    example = request if request is not None else rehearsed.example
    if example is None:
        log(f"version {version} has no serving input example: its answers are not checked (give --request FILE)")
        return None
    return lambda: verifier.probe(example)


def _switch(registry: Registry, granter: Granter, roller: Roller, *, model, alias: str, target: str,
            record: Optional[str], log: Callable[[str], None], probe: Optional[Callable[[], str]] = None) -> str:
    """Grant, move the alias to `target`, record `record` as the previous version (None: leave the
    tag), roll, probe; on a failed roll or probe put alias and tag back, roll back, raise RolloutFailed."""
    name, tag = model.name, previous_tag(alias)
    log(granter.grant(name))
    before, tag_before = model.aliases.get(alias), model.tags.get(tag)

    def put_alias_back() -> None:
        if before is None:
            registry.delete_registered_model_alias(name, alias)
        else:
            registry.set_registered_model_alias(name, alias, before)

    def put_back() -> str:
        put_alias_back()
        if record is not None:
            if tag_before is None:
                registry.delete_registered_model_tag(name, tag)
            else:
                registry.set_registered_model_tag(name, tag, tag_before)
        return f"alias {name}@{alias} moved back to {before or '(unset)'}"

    registry.set_registered_model_alias(name, alias, target)
    if record is not None:
        try:
            registry.set_registered_model_tag(name, tag, record)
        except MlflowException as err:
            put_alias_back()
            raise PromotionError(f"recording the previous version of {name}@{alias} failed ({err}); "
                                 "the alias was put back") from None
    log(f"{name}@{alias}: {before or '(unset)'} -> {target}")
    try:
        rolled = roller.roll(name, alias, target)
        return f"{rolled}; {probe()}" if probe else rolled
    except RolloutError as err:
        failure = str(err)
    except Exception as err:  # an API or client error mid-rollout: undo all the same
        failure = f"{type(err).__name__}: {err}"
    restored = put_back()
    try:
        back = roller.restore()
    except RolloutError as err:
        back = f"serving did not come back either: {err}"
    raise RolloutFailed(f"rollout of {name}@{alias} -> version {target} failed: {failure}; {restored}; {back}")


def promote(registry: Registry, granter: Granter, roller: Roller, *, model: str, version: str, alias: str,
            requirements: Sequence[Requirement] = (), log: Callable[[str], None] = print,
            verifier: Optional[Verifier] = None, request: Optional[dict] = None) -> Outcome:
    version = str(version)
    registered = registered_model(registry, model)
    mv = ready_version(registry, model, version)
    for line in check_gates(registry, mv, requirements):
        log(f"gate passed: {line}")
    probe = _rehearse(verifier, model, version, request, log)
    previous = registered.aliases.get(alias)
    record = previous if previous not in (None, version) else None
    if previous == version:
        log(f"{model}@{alias} already points to version {version}: rolling serving onto it anyway")
    rollout = _switch(registry, granter, roller, model=registered, alias=alias, target=version, record=record, log=log,
                      probe=probe)
    log(rollout)
    return Outcome(model, alias, version, previous, rollout)


def rollback(registry: Registry, granter: Granter, roller: Roller, *, model: str, alias: str,
             log: Callable[[str], None] = print, verifier: Optional[Verifier] = None,
             request: Optional[dict] = None) -> Outcome:
    registered = registered_model(registry, model)
    current = registered.aliases.get(alias)
    if current is None:
        raise PromotionError(f"model {model!r} has no alias {alias!r}: nothing to roll back")
    target = registered.tags.get(previous_tag(alias))
    if not target:
        raise PromotionError(f"no previous version recorded for {model}@{alias} (tag {previous_tag(alias)}): "
                             "only an alias moved by tools.ops.promote can be rolled back")
    ready_version(registry, model, target)
    probe = _rehearse(verifier, model, target, request, log)
    rollout = _switch(registry, granter, roller, model=registered, alias=alias, target=target, record=current, log=log,
                      probe=probe)
    log(rollout)
    return Outcome(model, alias, target, current, rollout)


def serve_as_challenger(registry: Registry, granter: Granter, challenger: ChallengerTarget, version: str,
                        log: Callable[[str], None]) -> str:
    """Move the challenger's alias to `version` and roll its pods (put back if they do not get ready)."""
    return _switch(registry, granter, challenger.roller, model=registered_model(registry, challenger.model),
                   alias=challenger.alias, target=version, record=None, log=log)


def retire_challenger(registry: Registry, granter: Granter, challenger: ChallengerTarget, before: Optional[str],
                      champion: str, log: Callable[[str], None]) -> str:
    """The challenger's alias back to `before`, or to the champion's version if it had none (a
    challenger serving the champion's version is harmless), and its pods rolled onto it."""
    target = before or champion
    if registered_model(registry, challenger.model).aliases.get(challenger.alias) == target:
        return f"{challenger.model}@{challenger.alias} stays on version {target}"
    return serve_as_challenger(registry, granter, challenger, target, log)


@contextmanager
def champion_replicas_held(challenger: ChallengerTarget, log: Callable[[str], None]) -> Iterator[None]:
    """The champion keeps its replicas for the block (ChallengerTarget.champion_replicas), so the traffic
    an abort or the end of the canary sends back finds them; a failed release is said, never raised."""
    hold = challenger.champion_replicas
    if hold is None:
        yield
        return
    log(hold.hold())
    try:
        yield
    finally:
        try:
            log(hold.release())
        except RolloutError as err:
            log(f"the champion's autoscaler keeps the held minimum: {err}; `pulumi up` sets it back")


def promote_canary(registry: Registry, granter: Granter, roller: Roller, challenger: Optional[ChallengerTarget], *,
                   model: str, version: str, alias: str, thresholds: Thresholds,
                   requirements: Sequence[Requirement] = (), log: Callable[[str], None] = print,
                   verifier: Optional[Verifier] = None, request: Optional[dict] = None) -> Outcome:
    if challenger is None:
        raise PromotionError(f"STRATEGY=canary: {NO_CHALLENGER}")
    version = str(version)
    registered = registered_model(registry, model)
    if model != challenger.model or alias != challenger.champion_alias:
        raise PromotionError(f"STRATEGY=canary promotes the served model's champion, {challenger.model}@"
                             f"{challenger.champion_alias}, not {model}@{alias}")
    previous = registered.aliases.get(alias)
    if previous is None:
        raise PromotionError(f"model {model!r} has no {alias!r} alias: a canary compares the version with the "
                             "champion's; promote the first version with STRATEGY=rolling")
    if previous == version:
        raise PromotionError(f"{model}@{alias} already points to version {version}: nothing to compare")
    mv = ready_version(registry, model, version)
    for line in check_gates(registry, mv, requirements):
        log(f"gate passed: {line}")
    probe = _rehearse(verifier, model, version, request, log)
    challenger_before = registered.aliases.get(challenger.alias)
    with holding(challenger.router, log), champion_replicas_held(challenger, log):
        log(serve_as_challenger(registry, granter, challenger, version, log))
        unchanged = f"{model}@{alias} is still version {previous}"
        retire_with = f"`make challenger MODEL={model} VERSION={challenger_before or previous}` retires the challenger"
        try:
            run_steps(challenger.router, challenger.metrics, thresholds, log=log)
        except AbortFailed as err:
            raise PartlyDone(f"canary of {model} version {version} stopped: {err}; {unchanged}; {model}@"
                             f"{challenger.alias} serves version {version}; then {retire_with}") from None
        except KeyboardInterrupt:
            raise PartlyDone(f"canary of {model} version {version} interrupted: all traffic back on the champion, "
                             f"{unchanged}; {model}@{challenger.alias} still serves version {version}, without "
                             f"traffic: {retire_with}") from None
        except (CanaryBreach, RolloutError) as err:
            try:
                retired = retire_challenger(registry, granter, challenger, challenger_before, previous, log)
            except PromotionError as failure:  # the breach is what the operator must read first
                retired = f"not retired: {failure}; {retire_with}"
            for note in challenger.notes(0, False):
                log(note)
            what = "rolled back at" if isinstance(err, CanaryBreach) else "stopped:"
            raise CanaryRolledBack(f"canary of {model} version {version} {what} {err}; {unchanged}, all traffic on it; "
                                   f"challenger retired: {retired}") from None
        try:
            rollout = _switch(registry, granter, roller, model=registered, alias=alias, target=version, record=previous,
                              log=log, probe=probe)
        except RolloutFailed as err:
            try:
                log(challenger.router.abort())  # the champion is back on `previous`
            except RolloutError as failed:
                raise PartlyDone(f"{err}; sending all traffic back to the champion failed too: {failed}: run "
                                 f"`make challenger-abort`, then {retire_with}") from None
            raise
        log(rollout)
        try:
            log(challenger.router.route(*challenger.declared))
            log(retire_challenger(registry, granter, challenger, challenger_before, version, log))
        except (RolloutError, PromotionError, MlflowException) as err:
            raise PartlyDone(f"{model}@{alias} = version {version}, promoted and served; but putting the route back "
                             f"to serving.challenger's weight {challenger.declared[0]} and retiring the challenger "
                             "failed: "
                             f"{err}; `make challenger-weight WEIGHT={challenger.declared[0]}`, then "
                             f"`make challenger MODEL={model} VERSION={challenger_before or version}`") from None
    return Outcome(model, alias, version, previous, rollout)


# --- command line ------------------------------------------------------------------------------------
def _steps(text: str) -> tuple[int, ...]:
    try:
        return parse_steps(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.ops.promote", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--version", help="model version to promote (not with --rollback)")
    parser.add_argument("--alias", required=True, help="serving alias, e.g. champion")
    parser.add_argument("--require", action="append", default=[], metavar="METRIC_OP_VALUE",
                        help="gate on a metric of the version's run, e.g. 'accuracy>=0.9' (repeatable)")
    parser.add_argument("--rollback", action="store_true", help="point the alias back to its previous version")
    parser.add_argument("--strategy", choices=("rolling", "canary"), default="rolling",
                        help="rolling (default): all serving pods at once; canary: through the challenger track")
    parser.add_argument("--steps", type=_steps, metavar="10,50,100",
                        help="challenger weights of a canary (default serving.canary.steps)")
    targets.add_arguments(parser)
    parser.add_argument("--request", type=Path, metavar="FILE",
                        help="JSON request to check serving's answers with after the rollout (default: the "
                             "version's serving input example)")
    args = parser.parse_args(argv)
    if not args.model.strip() or not args.alias.strip():
        parser.error("--model and --alias name a registered model and its alias (make promote MODEL=NAME ALIAS=champion)")
    if args.rollback == bool(args.version):
        parser.error("give --version N to promote, or --rollback (without --version)")
    if args.rollback and args.require:
        parser.error("--require gates a promotion, not a rollback")
    if args.strategy != "canary" and args.steps:
        parser.error("--steps needs --strategy canary")
    if args.rollback and args.strategy == "canary":
        parser.error("--rollback moves the alias back the rolling way; a canary rolls itself back")
    try:
        args.requirements = [Requirement.parse(text) for text in args.require]
    except ValueError as err:
        parser.error(str(err))
    try:
        args.request_body = json.loads(args.request.read_text()) if args.request else None
    except (OSError, ValueError) as err:
        parser.error(f"--request {args.request}: not a readable JSON file ({err})")
    return args


def report(target: PromotionTarget, entry: dict) -> None:
    """Notify people; a notification that cannot be sent is said, and changes no outcome."""
    try:
        target.notify(entry)
    except (TargetError, OSError) as err:
        print(f"promote: warning: the notification was not sent ({err})", file=sys.stderr, flush=True)


def interrupt(signum, frame) -> None:
    """SIGTERM (a closed terminal, a CI job cancelled) stops a promotion as Ctrl-C does: a canary puts
    all traffic back on the champion before it exits."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    log = lambda message: print(f"promote: {message}", flush=True)  # noqa: E731
    signal.signal(signal.SIGTERM, interrupt)
    try:
        target = targets.platform(args).promotion(args.timeout)
        registry, granter = as_admin(target.tracking)
        checks = {"verifier": target.verifier, "request": args.request_body, "log": log}
        if args.rollback:
            outcome = rollback(registry, granter, target.roller, model=args.model, alias=args.alias, **checks)
        elif args.strategy == "canary":
            thresholds = target.challenger.thresholds if target.challenger else None
            if thresholds and args.steps:
                thresholds = thresholds.with_steps(args.steps)
            outcome = promote_canary(registry, granter, target.roller, target.challenger, model=args.model,
                                     version=args.version, alias=args.alias, thresholds=thresholds,
                                     requirements=args.requirements, **checks)
        else:
            outcome = promote(registry, granter, target.roller, model=args.model, version=args.version,
                              alias=args.alias, requirements=args.requirements, **checks)
    except (PromotionError, TargetError, RolloutError) as err:
        print(f"promote: error: {err}", file=sys.stderr, flush=True)
        if isinstance(err, PromotionError):
            report(target, promotion_notice(args.model, args.alias, args.version or "", reason=str(err),
                                            rolled_back=isinstance(err, (RolloutFailed, CanaryRolledBack))))
        return getattr(err, "exit_code", EXIT_ERROR)
    except MlflowException as err:
        print(f"promote: error: tracking answered {err.error_code}: {err.message}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    log(f"{outcome.model}@{outcome.alias} = version {outcome.version} (was {outcome.previous or 'unset'}), served")
    if args.rollback:
        report(target, promotion_notice(outcome.model, outcome.alias, outcome.version, rolled_back=True,
                                        reason=f"from version {outcome.previous} by `make rollback`"))
    for note in target.notes:
        log(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
