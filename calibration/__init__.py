"""The calibration runtime: three stages joined by files (design lesson 10).

- ``calibration.measure`` (imports jax): plan and time the benchmark cases into ``raw.csv``
  (``run``, ``bench``, ``in_context``), the reference models and their real train steps
  (``models``, ``mesh``, ``steps``), ``validate`` and XLA's compiled collectives (``hlo``,
  ``hlo_compare``).
- ``calibration.fitting`` (numpy and scipy only, never jax): ``raw.csv`` -> a fitted profile
  and ``fit_report.json`` beside it (``fit``, ``fit_context``, ``profile_out``, ``fit_cli``).
- Shared by both, without jax: the raw-rows file (``raw``), the cases as data (``cases``,
  ``context``), the reference model (``reference``) and the run's dtype (``dtypes``).

Only ``calibration.measure`` imports jax; ``simulator`` never imports calibration.
"""
