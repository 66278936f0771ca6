"""The base layer under both ``hardware_profiles`` and ``simulator``: the error type every
command reports and the spec-file reader. It imports nothing of theirs, so neither package's
loaders need the other's command-line modules."""
