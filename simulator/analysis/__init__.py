"""Studies built on forecasts: attribution and decomposition of a step, matched MoE/dense
comparisons, training budgets, sharding studies and forecast intervals."""
