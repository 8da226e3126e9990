"""Build of the one C extension (the metadata is in pyproject.toml).

``scalyproxy._scan`` is optional: without a C compiler the install still
works and the codec runs its pure-Python path (slower; see docs/wire.md).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "scalyproxy._scan",
            ["scalyproxy/_scan.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
