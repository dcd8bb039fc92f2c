"""Builds onebyone's one compiled part, the direct float32 CPU kernels (src/onebyone/_native.c).

Everything else is in pyproject.toml. The kernels need only a C compiler with GNU C vector
extensions (gcc or clang); where the build fails the package still installs, and conv1x1 runs on
the BLAS libraries alone (onebyone.ops.native_isa() then returns None).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "onebyone._native",
            sources=["src/onebyone/_native.c"],
            depends=["src/onebyone/_native_kernels.h", "src/onebyone/_native_amx.h"],
            extra_compile_args=["-O3", "-std=gnu11", "-pthread", "-fno-math-errno"],
            extra_link_args=["-pthread"],
            libraries=["dl"],
            optional=True,
        )
    ]
)
