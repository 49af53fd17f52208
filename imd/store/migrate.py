# -*- test-case-name: tests.test_migrations -*-
"""Run imd's alembic revisions from code (server start, ``python -m imd db``)."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from imd.store.database import create_imd_engine, normalize_url


def script_location() -> str:
    package = Path(__file__).resolve().parent.parent
    # An installed imd carries the revisions inside the package (setup.cfg
    # maps alembic/ to imd.migrations); a source tree has them at the top.
    for candidate in (package / "migrations", package.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return str(candidate)
    raise RuntimeError(f"imd's alembic revisions are missing (looked beside {package})")


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", script_location())
    cfg.attributes["imd_url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at C{url} to C{revision}. Blocking."""
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def describe(url: str) -> str:
    """C{url} as an administrator should read it: no password, a SQLite file by its absolute path."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return f"sqlite:///{os.path.abspath(parsed.database)}"
    return parsed.render_as_string(hide_password=True)


def exists(url: str) -> bool:
    """
    Whether the database at C{url} is there; for a SQLite file, asked
    without opening it, which would create it.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return os.path.isfile(parsed.database)
    return True


def current_revision(url: str) -> str | None:
    """The revision the database at C{url} is at (None: not migrated or absent). Blocking."""
    if not exists(url):
        return None
    engine = create_imd_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
