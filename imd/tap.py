# -*- test-case-name: tests.test_server -*-
"""``twistd imd``: the options and the service maker."""

from __future__ import annotations

import os

from twisted.python import usage

import imd
from imd.config import Config, ConfigError


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = (
        "Runs the imd instant-messaging server. Without --config every key has "
        "its default (SQLite under ./var, HTTP on 127.0.0.1:8080); IMD_<SECTION>_<KEY> "
        "environment variables override the file. `python -m imd config defaults` "
        "prints every key with its default, a file to start from."
    )
    optParameters = [
        ["config", "c", None, "TOML configuration file (`python -m imd config defaults` prints every key)."],
    ]

    def opt_version(self) -> None:
        """Print imd's version and exit."""
        print(f"imd {imd.__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        path = self["config"] or os.environ.get("IMD_CONFIG") or None
        try:
            self.imd_config = Config.load(path)
        except ConfigError as e:
            # One line, not twistd's usage text: the key is what matters.
            raise SystemExit(f"imd: config error: {e}")


def makeService(options: Options):
    from imd.server import Server

    return Server(options.imd_config).make_service()
