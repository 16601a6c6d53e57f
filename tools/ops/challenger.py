"""Day-2 commands of the challenger track (`serving.challenger`), on a running platform:

    python -m tools.ops.challenger --model NAME --version N   # serve N as the challenger
    python -m tools.ops.challenger --weight 0..100            # its share of the requests
    python -m tools.ops.challenger --mirror on|off            # a copy of every request (weight 0)
    python -m tools.ops.challenger --abort                    # all traffic to the champion now
        [--target local|cluster] [--stack dev] [--workdir .local] [--tracking-uri URL] [--timeout S]

Setting the version checks that the model is the served one, that it has its champion alias, and
that the version exists and is READY; a weight above 0 or mirror on, that the challenger's alias is set; then grants the serving user READ, moves the challenger's
alias and rolls the challenger's pods (put back if they do not get ready). The others change the
live route only (the cluster: the HTTPRoute, with the `pulumi config set --path` command that
keeps the change in the stack). Exit codes: 0 done, 1 error (nothing changed), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from mlflow.exceptions import MlflowException

from tools.ops import targets
from tools.ops.interfaces import ChallengerTarget, RolloutError, TargetError
from tools.ops.lease import holding
from tools.ops.promote import (
    EXIT_ERROR, NO_CHALLENGER, PromotionError, Registry, as_admin, ready_version, registered_model, serve_as_challenger,
)


def _weight(text: str) -> int:
    try:
        weight = int(text)
    except ValueError:
        weight = -1
    if not 0 <= weight <= 100:
        raise argparse.ArgumentTypeError(f"WEIGHT={text!r}: a whole percentage 0..100")
    return weight


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"MIRROR={text!r}: on or off")
    return text == "on"


def check_version(registry: Registry, challenger: ChallengerTarget, model: str, version: str) -> None:
    """The served model, with its champion alias, and a READY version; PromotionError otherwise."""
    registered = registered_model(registry, model)
    if model != challenger.model:
        raise PromotionError(f"model {model!r} is not the served one: the challenger serves {challenger.model!r} "
                             "(serving.modelName)")
    if challenger.champion_alias not in registered.aliases:
        raise PromotionError(f"model {model!r} has no {challenger.champion_alias!r} alias: promote a champion "
                             "first (`make promote`), a challenger is compared with it")
    ready_version(registry, model, version)


def check_served(registry: Registry, challenger: ChallengerTarget) -> None:
    """Traffic may go to the challenger only once its alias names a version; PromotionError otherwise."""
    if challenger.alias not in registered_model(registry, challenger.model).aliases:
        raise PromotionError(f"model {challenger.model!r} has no {challenger.alias!r} alias: the challenger serves "
                             f"nothing yet; `make challenger MODEL={challenger.model} VERSION=N` first")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.ops.challenger", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--version", help="serve this version as the challenger (with --model)")
    action.add_argument("--weight", type=_weight, help="challenger share of requests, 0..100")
    action.add_argument("--mirror", type=_on_off, help="on: the challenger gets a copy of every request")
    action.add_argument("--abort", action="store_true", help="all traffic to the champion, mirror off")
    parser.add_argument("--model", help="registered model (with --version)")
    targets.add_arguments(parser)
    args = parser.parse_args(argv)
    # make passes both, empty when unset
    if args.version is not None and not (args.version.strip() and (args.model or "").strip()) or \
            args.version is None and args.model is not None:
        parser.error("--version and --model go together (make challenger MODEL=NAME VERSION=N)")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    log = lambda message: print(f"challenger: {message}", flush=True)  # noqa: E731
    try:
        target = targets.platform(args).promotion(args.timeout)
        challenger = target.challenger
        if challenger is None:
            raise PromotionError(NO_CHALLENGER)
        if args.abort:  # needs no lease: stopping a stuck or running canary always works
            log(challenger.router.abort())
            route = (0, False)
        elif args.version is not None:
            registry, granter = as_admin(target.tracking)
            check_version(registry, challenger, args.model, str(args.version))
            with holding(challenger.router, log):
                log(serve_as_challenger(registry, granter, challenger, str(args.version), log))
            return 0
        else:
            if args.weight or args.mirror:
                check_served(as_admin(target.tracking)[0], challenger)
            route = (args.weight, False) if args.weight is not None else (0, args.mirror)
            with holding(challenger.router, log):
                log(challenger.router.route(*route))
    except (PromotionError, TargetError, RolloutError) as err:
        print(f"challenger: error: {err}", file=sys.stderr, flush=True)
        return getattr(err, "exit_code", EXIT_ERROR)
    except MlflowException as err:
        print(f"challenger: error: tracking answered {err.error_code}: {err.message}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    for note in challenger.notes(*route):
        log(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
