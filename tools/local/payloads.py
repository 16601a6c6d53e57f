"""The local stand-in for the payload log's Cloud Logging sink: every serving pod's payload entries (the
JSON lines the pods write on stderr, which the local platform keeps in each track's log) appended to
WORKDIR/payloads.jsonl, the file the drift job reads locally instead of BigQuery. As the sink, it copies
only entries whose message is the payload log's, and only whole lines."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

from infra.payload_store import PAYLOAD_LOG_MESSAGE

PAYLOADS_FILE = "payloads.jsonl"
POLL_SECONDS = 0.5


def is_payload_entry(line: bytes) -> bool:
    try:
        document = json.loads(line)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("message") == PAYLOAD_LOG_MESSAGE


class PayloadRecorder:
    """Follows the `sources` (append-only: every pod of a track, old and new, writes to its track's) from where
    it last read each, copying the lines `keep` accepts (the payload entries; the recording sink passes its own)."""

    def __init__(self, sources: tuple[Path, ...], target: Path, keep: Callable[[bytes], bool] = is_payload_entry):
        self.target = target
        self.keep = keep
        self._offsets = dict.fromkeys(sources, 0)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self) -> int:
        """Copies the entries written since the last call; how many."""
        with self._lock:
            entries = []
            for source, offset in self._offsets.items():
                try:
                    with open(source, "rb") as log:
                        log.seek(offset)
                        chunk = log.read()
                except FileNotFoundError:
                    continue
                whole = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for the next call
                self._offsets[source] = offset + len(whole)
                entries += [line for line in whole.splitlines(keepends=True) if self.keep(line)]
            if entries:
                with open(self.target, "ab") as out:
                    out.writelines(entries)
            return len(entries)

    def _run(self) -> None:
        while not self._stopped.wait(POLL_SECONDS):
            self.record()

    def start(self) -> None:
        self.target.touch()
        self._thread = threading.Thread(target=self._run, name="payload-recorder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.record()
