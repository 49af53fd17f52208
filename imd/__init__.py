"""imd: a self-hosted instant-messaging server on Twisted."""

__version__ = "0.1.0"
