"""The installed package's version, for config.json and saved models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gmvae")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
