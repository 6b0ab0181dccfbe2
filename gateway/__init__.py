"""schoolgate: the edge gateway daemon for school-gate security devices.

Importing the package first imports structlog with `rich` hidden. `rich` is installed for the
receiving console (`receiver/`) only, and structlog, when it can import rich, loads rich's
console, traceback and syntax modules (and pygments) to format exceptions: about 80 modules and
4-5 MB resident in every daemon, which then never draws a table. Hidden, structlog formats
exceptions as it did before rich was a dependency; rich stays importable for the console.
Every entry point of the daemon (`gateway.cli`, `python -m gateway`) passes through here first.
"""

import sys

__version__ = "0.1.0"

if "structlog" not in sys.modules and "rich" not in sys.modules:
    sys.modules["rich"] = None  # type: ignore[assignment] # None in sys.modules: ImportError
    try:
        import structlog  # noqa: F401 - imported once here, without rich
    finally:
        del sys.modules["rich"]
