"""pyloto: WhatsApp Cloud API inbound orchestrator."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pyloto-corp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
