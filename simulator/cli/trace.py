"""Chrome / Perfetto trace of a scheduled step (open in ui.perfetto.dev or chrome://tracing).

Process 1 is the critical pipeline rank's scheduled micro-batch (one thread per stream, nodes as
complete "X" events); process 2 is the pipeline schedule of micro-batch tasks when ``pp > 1``
(one thread per pipeline rank). Every process and thread used is named by a metadata event
(``process_name``, ``thread_name``), so a viewer shows names, never bare ids. Times are
microseconds.
"""

from __future__ import annotations

import json
from pathlib import Path


def chrome_trace_events(pred) -> list[dict]:
    crit = pred.critical
    streams: dict[str, int] = {}
    events: list[dict] = [{"ph": "M", "pid": 1, "name": "process_name",
                           "args": {"name": f"{pred.job.model.name}: one micro-batch + step tail"}}]
    for name, attrs in crit.graph.nodes.items():
        op = attrs["op"]
        tid = streams.setdefault(op.stream, len(streams))
        dur = crit.sched.end[name] - crit.sched.start[name]
        if dur <= 0:
            continue
        args = {"category": op.category, "phase": op.phase}
        if op.flops:
            args["flops"] = op.flops
        if op.nbytes:
            args["bytes"] = op.nbytes
        events.append({"ph": "X", "pid": 1, "tid": tid, "name": name, "cat": op.category,
                       "ts": crit.sched.start[name] * 1e6, "dur": dur * 1e6, "args": args})
    for stream, tid in streams.items():
        events.append({"ph": "M", "pid": 1, "tid": tid, "name": "thread_name",
                       "args": {"name": stream}})
    if pred.pipeline is not None and pred.pipeline.tasks:
        events.append({"ph": "M", "pid": 2, "name": "process_name",
                       "args": {"name": "pipeline schedule (F/B per micro-batch)"}})
        ranks = sorted({task[0] for task in pred.pipeline.tasks})
        events += [{"ph": "M", "pid": 2, "tid": rank, "name": "thread_name",
                    "args": {"name": f"pipeline rank {rank}"}} for rank in ranks]
        for rank, kind, stage, mb, t0, t1 in pred.pipeline.tasks:
            events.append({"ph": "X", "pid": 2, "tid": rank, "name": f"{kind}{mb} s{stage}",
                           "cat": kind, "ts": t0 * 1e6, "dur": (t1 - t0) * 1e6})
    return events


def write_chrome_trace(pred, path: str | Path) -> None:
    """Write ``{"traceEvents": [...]}`` atomically (a temp file renamed into place)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"traceEvents": chrome_trace_events(pred),
                               "displayTimeUnit": "ms"}))
    tmp.replace(path)
