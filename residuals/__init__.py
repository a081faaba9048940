"""residuals: gradient boosting and residual networks, side by side and measured.

Both backends share one vocabulary (:mod:`residuals.core`): a model is a running
state plus stages that each add a correction to it.
"""

import os as _os

# On a shared machine torch's default OpenMP busy-waiting makes multi-thread training many
# times slower when another tenant holds a core (benchmarks/README.md, "Figures behind the
# defaults"); passive waiting fixes it. It must be set before torch (and its OpenMP runtime)
# loads, which is why it lives here; a value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# the benches register their report renderers (by module path: nothing heavy is imported)
import residuals.bench  # noqa: E402,F401
from residuals.core import StageStep, Stagewise  # noqa: E402

__all__ = ["StageStep", "Stagewise", "__version__"]
