"""legmri: leg and lumbar-spine MRI measurements with an evidence-backed diagnostic summary."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("legmri")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
