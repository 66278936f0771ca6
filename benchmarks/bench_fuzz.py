"""The long fuzz run of issue 15: thousands of bad inputs into the CLI and the spec loaders, drawn
by the strategies of ``tests/test_fuzz.py`` (which runs a bounded sample of them in
``make test``), with the counts of each outcome: clean errors, successes, tracebacks, hangs,
nonsense (exit 0 with a NaN, an infinity or a negative time or size; JSON that is not strict)
and unclear errors (a non-zero exit without one short ``error:`` paragraph). Each distinct bug
is printed once with its first input. Run with ``make bench`` (5 to 9 minutes on 2 cores);
``MESHCAST_FUZZ_SCALE=0.1`` runs a tenth of the cases."""

from __future__ import annotations

import os
import re
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.test_fuzz import (BUGS, Outcome, compare_case, plan_case, predict_case, published_case,
                             rank_case, raw_case, run_case)

#: Cases per kind (about 4,000 in all): the cheap forecasts most, the searches and fits fewer.
CASES = {"predict": (predict_case, 1800), "rank": (rank_case, 350), "plan": (plan_case, 300),
         "compare": (compare_case, 250), "published": (lambda: published_case(slow=60), 600),
         "raw.csv": (raw_case, 600)}
#: Seconds a case may run before it counts as a hang.
TIMEOUT_S = 60.0


def _signature(o: Outcome) -> str:
    """What makes two bugs one: the verdict and the last line of the traceback (or the first of
    the detail), numbers dropped."""
    lines = [ln for ln in o.detail.strip().splitlines() if ln.strip()]
    if o.verdict == "traceback":
        frames = [ln.strip() for ln in lines if ln.strip().startswith("File ")
                  and "site-packages" not in ln and "test_fuzz.py" not in ln]
        error = next((ln for ln in reversed(lines) if re.match(r"^[\w.]*(Error|Exception)\b", ln)),
                     lines[-1] if lines else "")
        where = ":".join(frames[-1].split(",")[:2]) if frames else ""
        return f"traceback {error.split(':')[0]} at {where}"
    head = lines[0] if lines else ""
    return f"{o.verdict} {''.join(c for c in head[:60] if not c.isdigit())}"


@pytest.mark.benchmark
def test_fuzz_counts():
    scale = float(os.environ.get("MESHCAST_FUZZ_SCALE", "1"))
    counts: Counter = Counter()
    by_kind: dict[str, Counter] = {}
    first: dict[str, tuple[str, Outcome, object]] = {}
    t0 = time.perf_counter()
    for kind, (strategy, n) in CASES.items():
        per = by_kind.setdefault(kind, Counter())

        @settings(max_examples=max(1, int(n * scale)), deadline=None, derandomize=True,
                  database=None, phases=(Phase.generate,),
                  suppress_health_check=list(HealthCheck))
        @given(strategy())
        def one(case):
            for o in run_case(case, TIMEOUT_S):
                counts[o.verdict] += 1
                per[o.verdict] += 1
                if o.verdict in BUGS:
                    first.setdefault(_signature(o), (kind, o, case))

        t = time.perf_counter()
        one()
        per["seconds"] = round(time.perf_counter() - t)
    total = sum(v for k, v in counts.items())
    print(f"\nfuzz (issue 15): {total:,} cases (CLI calls) in {time.perf_counter() - t0:.0f} s; "
          f"seed: derandomize=True (the same cases every run)")
    for name in ("clean_error", "success", "traceback", "hang", "nonsense", "unclear_error"):
        print(f"  {name.replace('_', ' '):<14}{counts[name]:>7,}")
    print("  by kind:")
    for kind, per in by_kind.items():
        shown = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in per.items() if k != "seconds")
        print(f"    {kind:<11}{sum(v for k, v in per.items() if k != 'seconds'):>6,} in "
              f"{per['seconds']:>4} s: {shown}")
    if first:
        print(f"  {len(first)} distinct bug(s), first input of each:")
        for sig, (kind, o, case) in sorted(first.items()):
            print(f"  - [{kind}] {sig}\n      {case!r}\n      {o}".replace("\n", "\n      "))
    assert not first, f"{len(first)} distinct bug(s); see the list above"
