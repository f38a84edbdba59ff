"""labclient: the thin Python client for labservice."""

__version__ = "0.1.0"
