"""Build step of the optional C loops of hist mode (everything else is in pyproject.toml).

``residuals/boosting/_kernels.c`` is an *optional* extension: where no C
compiler is at hand, the install goes on without it and hist mode uses torch's
loops instead (same results, slower on the CPU; see residuals/boosting/_kernels.py).
"""

import sys

from setuptools import Extension, setup

# -fno-trapping-math lets the compiler vectorise the split scores (no FP trap is ever
# enabled here; results are unchanged); -ffp-contract=off: no fused multiply-adds, so
# every sum and score rounds exactly as torch's loops round it (bit-identical results).
flags = (
    ["/O2", "/fp:precise"]
    if sys.platform == "win32"
    else ["-O3", "-fno-trapping-math", "-ffp-contract=off"]
)

setup(
    ext_modules=[
        Extension(
            "residuals.boosting._kernels_c",
            sources=["residuals/boosting/_kernels.c"],
            extra_compile_args=flags,
            optional=True,
        )
    ]
)
