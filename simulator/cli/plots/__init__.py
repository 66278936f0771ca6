"""Pictures of forecasts, rankings, comparisons, the sharding study, plans and calibrations.

Every function takes an API result and returns a ``matplotlib.figure.Figure`` built without
pyplot (so no GUI backend is needed); :func:`save` writes a PNG, :func:`png_bytes` renders one.
"""

from simulator.cli.plots.calibration import plot_fit, plot_validation
from simulator.cli.plots.common import png_bytes, save, show
from simulator.cli.plots.compare import plot_comparison
from simulator.cli.plots.plan import plot_plan
from simulator.cli.plots.predict import plot_prediction
from simulator.cli.plots.rank import plot_rank
from simulator.cli.plots.study import plot_study

__all__ = ["plot_comparison", "plot_fit", "plot_plan", "plot_prediction", "plot_rank",
           "plot_study", "plot_validation", "png_bytes", "save", "show"]
