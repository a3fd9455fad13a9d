"""lopt's version (one place: setup.cfg, the root package and archive keys read it)."""

__version__ = "0.1.0"
