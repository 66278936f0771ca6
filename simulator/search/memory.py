"""Memory per device for columns of configurations: the graph path's
:func:`simulator.graph.memory.rank_memory` on numpy columns (so ``fits`` is the graph path's
``fits``). The rank with the largest total sets the estimate (:func:`max_in_flight` picks each
class of identical ranks' worst in-flight count).
"""

from __future__ import annotations

import numpy as np

from simulator.graph.dims import Dims
from simulator.graph.memory import in_flight_microbatches, rank_memory


def max_in_flight(ranks: list[int], pp, m: np.ndarray, interleaved: np.ndarray,
                  v) -> np.ndarray:
    """Per row, the most micro-batches in flight over pipeline ranks ``ranks``
    (:func:`simulator.graph.memory.in_flight_microbatches`)."""
    return np.max([in_flight_microbatches(r, pp, m, interleaved, v) for r in ranks], axis=0)


def memory_bytes(d: Dims, space, remat: np.ndarray, kinds: tuple[bool, ...], first: bool,
                 last: bool, flight: np.ndarray) -> np.ndarray:
    """Per-device bytes of a rank holding layers ``kinds`` with ``flight`` micro-batches alive;
    ``d`` holds numpy columns, ``remat`` indexes :data:`~simulator.search.space.REMATS`."""
    return rank_memory(space.model, space.base, d, kinds, first, last, remat, flight,
                       space.hardware.chip.hbm_capacity_bytes.value).per_device_bytes
