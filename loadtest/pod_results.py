"""The Locust master pod's results, carried back through its log.

In the pod: `python -m loadtest.pod_results --dir /results -- locust …` runs Locust, then prints the
directory's files (CSV + JSON) as one framed block of base64 lines (a gzipped tar) and exits with
Locust's code. A finished pod keeps its log until it is deleted, so `make loadtest TARGET=cluster`
reads them with the Kubernetes API's `pods/log` (`extract`): no exec into the pod, no port the
pod must open, nothing for a NetworkPolicy to admit.
"""

from __future__ import annotations

import argparse
import base64
import io
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

BEGIN, END = "loadtest-results: begin", "loadtest-results: end"
LINE = 8000  # characters per log line: well under container runtimes' and Cloud Logging's line limits


def pack(directory: Path) -> list[str]:
    """The framed block: BEGIN, base64 lines of a gzipped tar of the directory's files, END."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(p for p in directory.iterdir() if p.is_file()):
            archive.add(path, arcname=path.name)
    text = base64.b64encode(buffer.getvalue()).decode()
    return [BEGIN, *(text[i:i + LINE] for i in range(0, len(text), LINE)), END]


def extract(log: str) -> dict[str, bytes]:
    """File name -> content, from the last complete block of a log."""
    lines = log.splitlines()
    try:
        end = len(lines) - 1 - lines[::-1].index(END)
        begin = end - 1 - lines[end - 1::-1].index(BEGIN)
    except ValueError:
        raise ValueError("the log holds no complete results block (did Locust finish?)") from None
    data = base64.b64decode("".join(lines[begin + 1:end]))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {member.name: archive.extractfile(member).read() for member in archive.getmembers()
                if member.isfile() and "/" not in member.name}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.pod_results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="where Locust writes its results")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- locust …")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    args.dir.mkdir(parents=True, exist_ok=True)
    locust = subprocess.Popen(command)
    # Kubernetes stops the pod with SIGTERM: Locust then stops its users and still writes results.
    signal.signal(signal.SIGTERM, lambda *_: locust.send_signal(signal.SIGTERM))
    code = locust.wait()
    print("\n".join(pack(args.dir)), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
