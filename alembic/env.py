"""
Alembic environment for imd.

The database URL comes from imd itself: the server and ``python -m imd db
upgrade`` pass it in; the plain ``alembic`` command reads imd's config from
``-x config=FILE`` or ``$IMD_CONFIG`` (defaults and ``IMD_*`` variables
apply as for the server).
"""

import os

from alembic import context
from sqlalchemy import text

from imd.config import Config
from imd.store.database import create_imd_engine, normalize_url
from imd.store.schema import metadata

# Any 64-bit constant: every imd instance takes this Postgres advisory lock
# while migrating, so instances starting together migrate one at a time.
MIGRATION_LOCK = 0x696D64


def _url() -> str:
    url = context.config.attributes.get("imd_url")
    if url is None:
        path = context.get_x_argument(as_dictionary=True).get("config") or os.environ.get(
            "IMD_CONFIG"
        )
        url = Config.load(path).database.url
    return url


def run_offline() -> None:
    context.configure(
        url=normalize_url(_url()),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = create_imd_engine(_url(), pool_size=1)
    try:
        with engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            sqlite = connection.dialect.name == "sqlite"
            if postgres:
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
                connection.commit()
            if sqlite:
                _sqlite_foreign_keys(connection, False)
            try:
                context.configure(
                    connection=connection,
                    target_metadata=metadata,
                    # SQLite alters tables by copying them.
                    render_as_batch=True,
                )
                with context.begin_transaction():
                    context.run_migrations()
                    if sqlite:
                        _no_dangling_keys(connection)
            finally:
                if postgres:
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK}
                    )
                    connection.commit()
                if sqlite:
                    _sqlite_foreign_keys(connection, True)
    finally:
        engine.dispose()


def _sqlite_foreign_keys(connection, on: bool) -> None:
    # A revision that copies a table (batch mode) drops the old one, which
    # with foreign keys on deletes every row that refers to it by a
    # cascade.  So they are off while migrating; SQLite changes the
    # setting only outside a transaction, hence on the driver's
    # connection, before SQLAlchemy begins one.
    connection.connection.dbapi_connection.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def _no_dangling_keys(connection) -> None:
    # What the keys would have refused, refused at the end, before commit.
    dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if dangling:
        raise RuntimeError(f"the migration left rows that refer to nothing: {dangling[:5]}")


if context.is_offline_mode():
    run_offline()
else:
    run_online()
