"""make local's stand-in for the payload log's sink (tools/local/payloads.py): only payload entries, only
whole lines, from every track's log, each copied once."""

from __future__ import annotations

import json

from infra.payload_store import PAYLOAD_LOG_MESSAGE
from tools.local.payloads import PayloadRecorder


def entry(n: int) -> str:
    return json.dumps({"message": PAYLOAD_LOG_MESSAGE, "payload": {"requestId": str(n)}}) + "\n"


def test_the_recorder_copies_each_tracks_payload_entries_once_and_only_whole_lines(tmp_path):
    serving, challenger, target = tmp_path / "serving.log", tmp_path / "challenger.log", tmp_path / "payloads.jsonl"
    recorder = PayloadRecorder((serving, challenger), target)
    serving.write_text('{"severity": "INFO", "message": "GET /ping 200"}\n' + entry(1) + "not json\n"
                       + entry(2)[:20])  # the last line still being written
    challenger.write_text(entry(3))
    assert recorder.record() == 2
    with open(serving, "a") as log:
        log.write(entry(2)[20:])
    assert recorder.record() == 1
    assert recorder.record() == 0
    assert sorted(json.loads(line)["payload"]["requestId"] for line in target.read_text().splitlines()) == ["1", "2", "3"]
