"""The numpy side of calibration: raw rows -> fitted profile and report. Never imports jax
(``tests/test_calibration_layers.py`` checks), so a fit runs where jax is not installed."""
