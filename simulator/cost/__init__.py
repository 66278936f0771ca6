"""Physics: what an op or a collective costs on a chip and a topology (roofline, efficiency
curves, collective algorithms, placement of mesh axes on network levels, model FLOPs), and the
formulas the step graph and the search share (:mod:`simulator.cost.formulas`)."""
