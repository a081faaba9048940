"""Build step of the optional C loops of hist mode (everything else is in pyproject.toml).

``residuals/boosting/_kernels.c`` is an *optional* extension: where no C
compiler is at hand, the install goes on without it and hist mode uses torch's
loops instead (same results, slower on the CPU; see residuals/boosting/_kernels.py).
"""

import sys

from setuptools import Extension, setup

flags = ["/O2"] if sys.platform == "win32" else ["-O3", "-fno-strict-aliasing"]

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
