"""`make plan STACK=…`: print, offline, every resource a stack would create, like `pulumi preview`."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from infra.config import ConfigError
from offline.stack import StackRun, run_stack


def resource_tree(run: StackRun) -> list[str]:
    """One line per resource, `+ type name`, indented under its parent, in declaration order."""
    children: dict[str, list] = {}
    for record in run.resources:
        children.setdefault(record.parent, []).append(record)
    known = {record.urn for record in run.resources}
    roots = [r for r in run.resources if r.parent not in known]
    lines: list[str] = [f"+ pulumi:pulumi:Stack mlflow-platform-{run.stack}"]

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    args = parser.parse_args(argv)
    try:
        run = run_stack(args.stack)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: stack {args.stack!r} is invalid:\n{err}", file=sys.stderr)
        return 2
    print(f"Previewing stack {args.stack!r} offline (mocked providers; nothing is created):\n")
    print("\n".join(resource_tree(run)))
    print("\nResources by type:")
    print("\n".join(type_counts(run)))
    print("\nOutputs:")
    print("\n".join(outputs_summary(run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
