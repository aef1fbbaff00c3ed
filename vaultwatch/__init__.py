"""vaultwatch: the application shell (configuration, CLI, pipeline, API, reports, demo stack)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vaultwatch")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
