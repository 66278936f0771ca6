"""Published training runs (``published_runs.csv``) as forecastable jobs, and meshcast's error on them.

``read_rows`` -> :class:`PublishedRow`; ``row_to_case`` -> a :class:`Case` (the job, the measured
step time and how it was derived) or a :class:`Skip` with its reason (``read_cases``: a whole
file); ``evaluate`` forecasts the
cases; ``summarize`` reports median / p90 absolute error, bias and Spearman by group; ``fit``
fits per-hardware-family efficiencies with whole models held out.
"""

from simulator.published.evaluate import RowResult, evaluate
from simulator.published.jobs import Case, Skip, read_cases, row_to_case
from simulator.published.rows import PublishedRow, read_rows
from simulator.published.summary import summarize

__all__ = ["PublishedRow", "read_rows", "Case", "Skip", "row_to_case", "read_cases", "RowResult",
           "evaluate", "summarize"]
