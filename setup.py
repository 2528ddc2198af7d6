"""The build's one choice: the core (``stateless13/*.py``) compiled with mypyc, or pure Python.

Both come from the same source; pure Python is the default.  ``STATELESS13_COMPILE=1`` compiles
every core module but ``__init__`` and ``__main__`` (names only: nothing to speed up) into C
extensions.  That needs mypy and a C compiler in the build environment:
``STATELESS13_COMPILE=1 pip install --no-build-isolation .`` with mypy installed, or
``python setup.py build_ext --inplace`` in a checkout, as ./run-tests does.  The adapters in
``stateless13.transports`` stay Python (they subclass aioquic's classes).  ``stateless13.COMPILED``
says which build is running.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import Extension, setup


def compiled_core() -> list[Extension]:
    if os.environ.get("STATELESS13_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    here = Path(__file__).resolve().parent
    modules = sorted(
        str(path.relative_to(here))
        for path in (here / "stateless13").glob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    )
    # The group's shared library goes inside the package (stateless13/core__mypyc...so), where
    # an editable install finds it as well as a wheel does.
    return mypycify(modules, opt_level="3", group_name="stateless13.core")


setup(ext_modules=compiled_core())
