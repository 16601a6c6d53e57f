"""`python -m mlflow_metrics --dir /tmp/prometheus --port 9102`."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector


def registry_for(directory: Path) -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlflow_metrics", description=__doc__)
    parser.add_argument("--dir", required=True, type=Path, help="the server's --expose-prometheus directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9102)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)  # the server may not have written its first file yet
    server, thread = start_http_server(args.port, addr=args.host, registry=registry_for(args.dir))
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    print(f"serving {args.dir} on {args.host}:{args.port}/metrics", flush=True)
    stopped.wait()
    server.shutdown()
    thread.join(timeout=5)


if __name__ == "__main__":
    main()
