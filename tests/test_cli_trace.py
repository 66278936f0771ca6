"""The Chrome / Perfetto trace (simulator/cli/trace.py): every process and thread an event uses is
named by a metadata event (issue 15), with and without a pipeline."""

from __future__ import annotations

import json

import pytest

from simulator import predict
from simulator.cli.trace import chrome_trace_events, write_chrome_trace


@pytest.mark.parametrize("mesh", [{"data": -1, "expert": 8, "model": 2},
                                  {"data": -1, "model": 2, "pipeline": 2}])
def test_every_process_and_thread_is_named(tmp_path, mesh):
    model = "mixtral-8x7b" if "expert" in mesh else "llama3-8b"
    pred = predict(model=model, hardware="h100-sxm", chips=32, mesh=mesh, global_batch=32,
                   seq_len=1024)
    path = tmp_path / "t.json"
    write_chrome_trace(pred, path)
    events = json.loads(path.read_text())["traceEvents"]
    assert events == json.loads(json.dumps(chrome_trace_events(pred)))
    used = {(e["pid"], e["tid"]) for e in events if e["ph"] == "X"}
    procs = {e["pid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {pid for pid, _ in used} <= set(procs)
    assert used <= set(threads), sorted(used - set(threads))
    assert all(name.strip() for name in [*procs.values(), *threads.values()])
    assert len(set(threads.values())) == len(threads)  # no two threads share a name
    if "pipeline" in mesh:
        assert 2 in procs and {threads[(2, r)] for r in range(2)} == {"pipeline rank 0",
                                                                      "pipeline rank 1"}
    assert not [e["name"] for e in events if "1 micro-batches" in json.dumps(e)]
