"""Insert a row unless its primary key is taken, atomically, on SQLite and MySQL alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.orm import Session


def insert_if_absent(session: Session, table: Table, values: dict[str, Any]) -> None:
    """Insert `values` into `table`; a row with the same key already there is left as it is.

    One statement, so two transactions racing to create the same row never fail: the loser
    waits for the winner's lock and then finds the row (a SELECT-then-INSERT would collide).
    """
    dialect = session.get_bind().dialect.name
    if dialect == "mysql":
        key = table.primary_key.columns.values()[0]
        # A no-op update: unlike INSERT IGNORE it hides no other error (truncation, NULL).
        session.execute(mysql.insert(table).values(values).on_duplicate_key_update({key.name: key}))
    elif dialect == "sqlite":
        session.execute(sqlite.insert(table).values(values).on_conflict_do_nothing())
    else:  # pragma: no cover - the two dialects this project runs on are above
        raise NotImplementedError(f"insert_if_absent does not know the {dialect} dialect")
