# -*- test-case-name: tests.test_store -*-
"""
Hand-written SQL on the driver's own cursor, for the few statements every
message runs.

SQLAlchemy Core builds, caches and compiles a statement and wraps every row
it returns; per statement that costs more Python than the database spends
executing it, and on the store thread that Python holds the GIL the
reactor needs.  The hot path of L{imd.store.messages} therefore writes its
SQL once, in the dialect both SQLite and Postgres accept, and runs it on
the DBAPI cursor of the connection the transaction already holds.
Everything else in the store stays in Core.

On SQLite every statement here is one step of the driver, whatever the
batch's size: no C{executemany}, no row-by-row fetch, no C{RETURNING}.
The C{sqlite3} module lets go of the GIL for each step and must take it
back afterwards, from a reactor that holds it most of the time under load;
a batch of 400 messages stepped row by row spent more of its transaction
waiting for the GIL than in SQLite.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable, Sequence

import orjson
from sqlalchemy.engine import Connection

# Rows per VALUES list on SQLite: 10 columns x 400 rows stays well under
# its 32,766 bound parameters.  Postgres takes the rows as one JSON array.
CHUNK = 400
PG_CHUNK = 5000


@lru_cache(maxsize=256)
def _format(sql: str) -> str:
    # psycopg's placeholder; no statement here contains a literal %.
    return sql.replace("?", "%s")


def marks(n: int) -> str:
    """C{?, ?, ?} for C{n} parameters."""
    return ", ".join("?" * n)


@lru_cache(maxsize=64)
def values(rows: int, width: int) -> str:
    """C{VALUES (?, ?), (?, ?)} for C{rows} rows of C{width} parameters."""
    return "VALUES " + ", ".join([f"({marks(width)})"] * rows)


def chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Raw:
    """
    The DBAPI cursor of C{conn}'s transaction, with C{?} placeholders on
    every driver; a context manager that closes the cursor.
    """

    def __init__(self, conn: Connection | None = None, *, dbapi: Any = None, postgres: bool = False) -> None:
        """On SQLAlchemy's C{conn}, or on a bare DBAPI connection C{dbapi} (L{imd.store.database.Database.run_raw})."""
        if conn is not None:
            postgres, dbapi = conn.dialect.name == "postgresql", conn.connection
        self.postgres = postgres
        self.chunk = PG_CHUNK if postgres else CHUNK
        self._cursor = dbapi.cursor()

    def table(self, name: str, columns: dict[str, str], rows: Sequence[Sequence[Any]]) -> tuple[str, list]:
        """
        C{rows} as a common table expression C{name}, for a C{WITH}: (its
        SQL, its parameters).  C{columns} maps each column to its Postgres
        type.  SQLite gets a VALUES list; Postgres one JSON array of the
        rows, one parameter, the same statement for any number of rows.
        Not an array per column: psycopg builds those in Python, with the
        GIL held, ten times the CPU of orjson's one string (400 messages:
        4.7 against 0.5 ms), and Postgres parses jsonb faster than it takes
        the arrays apart.
        """
        head = f"{name}({', '.join(columns)})"
        if self.postgres:
            picks = ", ".join(f"(e->>{i})::{t}" for i, t in enumerate(columns.values()))
            return f"{head} AS (SELECT {picks} FROM jsonb_array_elements(?::jsonb) AS e)", [orjson.dumps(rows).decode()]
        return f"{head} AS ({values(len(rows), len(columns))})", [v for row in rows for v in row]

    def insert(self, table: str, columns: dict[str, str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert C{rows} into C{table}; C{columns} as for L{table}."""
        for chunk in chunks(rows, self.chunk):
            cte, params = self.table("k", columns, chunk)
            self.execute(f"WITH {cte} INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM k", params)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.postgres:
            sql = _format(sql)
        self._cursor.execute(sql, params)
        return self._cursor

    def rows(self, sql: str, params: Sequence[Any], width: int) -> list[Sequence]:
        """
        The rows of the query C{sql}, each of C{width} columns.  SQLite
        hands them over as one JSON array, in one step (see the module's
        docstring); each row is then a list, not a tuple.
        """
        if self.postgres:
            return self.execute(sql, params).fetchall()
        names = ", ".join(f"c{i}" for i in range(width))
        (packed,) = self.execute(f"WITH r({names}) AS ({sql}) SELECT json_group_array(json_array({names})) FROM r", params).fetchone()
        return orjson.loads(packed)

    def __enter__(self) -> "Raw":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._cursor.close()
