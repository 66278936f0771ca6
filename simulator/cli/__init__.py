"""The command line: ``meshcast`` commands, their text reports, traces, plots, progress and the
demo. The only part of ``simulator`` that may import ``calibration`` (and through it jax)."""
