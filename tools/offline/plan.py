"""`make plan STACK=…`: print, offline, every resource a stack would create, like `pulumi preview`."""

from __future__ import annotations

import argparse
import difflib
import shutil
import sys
from collections import Counter
from pathlib import Path

from infra.config import ConfigError, settings_from_values
from infra.settings import Settings
from loadtest.stack.settings import LoadTestConfigError
from tools.offline.cost import cost_summary_line
from tools.offline.render import render
from tools.offline.stack import ROOT, StackRun, read_stack_config, run_load_test_stack, run_stack

PLAN_DIR = ROOT / "plan"
LOAD_TEST_PLAN_PREFIX = "loadtest-"  # plan/loadtest-<stack>/: the load-test project's stacks


def resource_tree(run: StackRun) -> list[str]:
    """One line per resource, `+ type name`, indented under its parent, in declaration order."""
    children: dict[str, list] = {}
    for record in run.resources:
        children.setdefault(record.parent, []).append(record)
    known = {record.urn for record in run.resources}
    roots = [r for r in run.resources if r.parent not in known]
    lines: list[str] = [f"+ pulumi:pulumi:Stack {run.project}-{run.stack}"]

    def walk(record, depth: int) -> None:
        lines.append(f"{'    ' * depth}+ {record.type} {record.name}")
        for child in sorted(children.get(record.urn, []), key=lambda r: (r.type, r.name)):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 1)
    return lines


def type_counts(run: StackRun) -> list[str]:
    counts = Counter(record.type for record in run.resources)
    width = max(len(token) for token in counts)
    return [f"    {token:<{width}}  {count}" for token, count in sorted(counts.items())] + [
        f"    {'total':<{width}}  {sum(counts.values())}"]


def outputs_summary(run: StackRun) -> list[str]:
    return [f"    {name}: {'[secret]' if name in run.secret_outputs else value}"
            for name, value in sorted(run.outputs.items())]


def warnings(settings: Settings) -> list[str]:
    """What a stack allows that prod refuses: said before anyone runs `pulumi up`."""
    found = []
    if settings.clusters.open_control_plane():
        found.append("the control plane's public IP endpoint accepts connections from any address "
                     "(authenticated); set mlflow-platform:clusters.masterAuthorizedCidrs to the ranges you deploy "
                     "from, or mlflow-platform:clusters.controlPlaneEndpoint to dns")
    if settings.edge.iap and not settings.edge.iap_backend_service_id:
        found.append("the tracking server accepts IAP assertions made for any backend service of the project, so "
                     "any other IAP-protected app in it mints assertions this server accepts; after the first "
                     "`pulumi up`, pin mlflow-platform:edge.iapBackendServiceId to the id "
                     "`gcloud compute backend-services describe NAME --global --format='value(id)'` prints for the "
                     "backend the Ingress made (README, Access)")
    return found


def write_plan(files: dict[str, str], directory: Path) -> None:
    """Replace directory's contents with files: a removed resource leaves no stale manifest."""
    if directory.exists():
        shutil.rmtree(directory)
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def stale_report(files: dict[str, str], directory: Path) -> list[str]:
    """Unified diffs between the committed plan and a fresh render; empty when current."""
    committed = {p.relative_to(directory).as_posix(): p.read_text()
                 for p in sorted(directory.rglob("*")) if p.is_file()} if directory.exists() else {}
    report = []
    for relative in sorted(set(files) | set(committed)):
        old, new = committed.get(relative, ""), files.get(relative, "")
        if old != new:
            report += difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                           f"committed/{relative}", f"rendered/{relative}")
    return report


def planned(stack: str, load_test: bool) -> tuple[StackRun, str]:
    """The stack's run and its plan directory's name; settings warnings printed first."""
    if load_test:
        return run_load_test_stack(stack), f"{LOAD_TEST_PLAN_PREFIX}{stack}"
    run = run_stack(stack)
    for warning in warnings(settings_from_values(read_stack_config(stack)[0])):
        print(f"warning: stack {stack!r}: {warning}", file=sys.stderr)
    return run, stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stack", action="append", default=[],
                        help="stack name (repeatable): reads Pulumi.<stack>.yaml")
    parser.add_argument("--loadtest-stack", action="append", default=[],
                        help="load-test stack name (repeatable): reads loadtest/Pulumi.<stack>.yaml, writes "
                             "plan/loadtest-<stack>/")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; fail with a diff when plan/<stack>/ is stale")
    parser.add_argument("--quiet", action="store_true", help="do not print the resource tree")
    args = parser.parse_args(argv)
    if not args.stack and not args.loadtest_stack:
        parser.error("name at least one --stack or --loadtest-stack")
    stale = False
    for stack, load_test in [(s, False) for s in args.stack] + [(s, True) for s in args.loadtest_stack]:
        try:
            run, plan_name = planned(stack, load_test)
        except (ConfigError, LoadTestConfigError, FileNotFoundError) as err:
            print(f"error: stack {stack!r} is invalid:\n{err}", file=sys.stderr)
            return 2
        files = render(run)
        directory = PLAN_DIR / plan_name
        if args.check:
            report = stale_report(files, directory)
            if report:
                stale = True
                print(f"plan/{plan_name} is stale; run `make plan-all` and commit it:", file=sys.stderr)
                sys.stderr.writelines(report)
            continue
        if not args.quiet:
            print(f"Previewing stack {stack!r} offline (mocked providers; nothing is created):\n")
            print("\n".join(resource_tree(run)))
            print("\nResources by type:")
            print("\n".join(type_counts(run)))
            print("\nOutputs:")
            print("\n".join(outputs_summary(run)))
            if not load_test:
                print(f"\n{cost_summary_line(run)}")
        write_plan(files, directory)
        print(f"\nWrote plan/{plan_name}/ ({len(files)} files)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
