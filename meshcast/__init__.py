"""The base layer under both ``hardware_profiles`` and ``simulator``: the error type every
command reports, the spec-file reader and the frozen pydantic base of every spec and profile
record (:class:`meshcast.frozen.Frozen`). It imports nothing of theirs, so neither package's
loaders need the other's command-line modules."""
