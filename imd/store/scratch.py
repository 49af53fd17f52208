"""
Throw-away Postgres schemas, for the test suite and the benchmark tool: a
database of its own for each run, inside one shared Postgres database.
"""

from __future__ import annotations

import secrets
from typing import Callable

from sqlalchemy import create_engine, text

from imd.store.database import normalize_url


def scratch_schema(base_url: str, prefix: str) -> tuple[str, Callable[[], None]]:
    """
    Create an empty schema named C{prefix} plus a random suffix in the
    database at C{base_url}; (a URL whose search_path is that schema, a
    function that drops it).
    """
    schema = f"{prefix}_{secrets.token_hex(3)}"
    admin = create_engine(normalize_url(base_url))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    url = normalize_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), drop
