"""Serving tables in PostgreSQL (for Grafana and other readers), written in bulk and idempotently.

The lake stays the record; these tables are a copy shaped for dashboards. A write is one
transaction: the Arrow table is streamed with `COPY ... FROM STDIN (FORMAT csv)` into a temporary
table, then merged with `INSERT ... ON CONFLICT (natural key) DO UPDATE`, so re-materializing an
hour rewrites its rows instead of adding copies. Values only ever travel through COPY, never
through SQL text, so an id such as `x'); DROP TABLE tire_alerts;--` is stored as it is; table and
column names are quoted identifiers.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv


class ServingUnavailable(RuntimeError):
    """The serving database cannot be reached or refused us; the message says what to check."""


def _csv_ready(data: pa.Table) -> pa.Table:
    """NaN as NULL (a dashboard's average must not turn NaN), timestamps at Postgres' microseconds."""
    cols = []
    for name in data.column_names:
        col = data[name]
        if pa.types.is_floating(col.type):
            col = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
        elif pa.types.is_timestamp(col.type):
            col = pc.cast(col, pa.timestamp("us", tz=col.type.tz or "UTC"), safe=False)
        elif pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        cols.append(col)
    return pa.table(cols, names=data.column_names)


class ServingResource(dg.ConfigurableResource):
    """`url` from `AERO_SERVING_PG_URL`; empty means serving is off and writes are skipped."""

    url: str | None = None
    connect_timeout_s: int = 5

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @contextmanager
    def connect(self) -> Iterator:
        import psycopg2

        try:
            conn = psycopg2.connect(self.url, connect_timeout=self.connect_timeout_s)
        except psycopg2.Error as exc:
            host = (self.url or "").split("@")[-1]
            raise ServingUnavailable(f"cannot connect to the serving database {host!r} from AERO_SERVING_PG_URL: "
                                     f"{str(exc).strip()}. Check that PostgreSQL is up and the URL is right, or unset "
                                     "AERO_SERVING_PG_URL to turn serving off.") from None
        try:
            yield conn
        finally:
            conn.close()

    def ensure_tables(self, ddl: list[str]) -> None:
        with self.connect() as conn, conn, conn.cursor() as cur:
            for statement in ddl:
                cur.execute(statement)

    def has_extension(self, name: str) -> bool:
        """Whether the server can create extension `name` (e.g. timescaledb): it is installed and available."""
        with self.connect() as conn, conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", (name,))
            return cur.fetchone() is not None

    def upsert(self, table: str, data: pa.Table, key_columns: list[str],
               replace_where: tuple[str, object, object] | None = None) -> int:
        """Insert or update `data` by its natural key, in one transaction; returns the rows written.

        `replace_where=(column, lo, hi)` first deletes the rows with `lo <= column < hi` in the same
        transaction: a re-materialized slice (a day) that now has fewer rows leaves none behind.
        """
        if data.num_rows == 0 and replace_where is None:
            return 0
        from psycopg2 import sql

        cols = data.column_names
        buf = io.BytesIO()
        pacsv.write_csv(_csv_ready(data), buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
        buf.seek(0)
        target, tmp = sql.Identifier(table), sql.Identifier(f"_aero_in_{table}")
        col_list = sql.SQL(", ").join(map(sql.Identifier, cols))
        keys = sql.SQL(", ").join(map(sql.Identifier, key_columns))
        updates = [sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in cols if c not in key_columns]
        updates.append(sql.SQL("updated_at = now()"))
        with self.connect() as conn, conn, conn.cursor() as cur:
            if replace_where is not None:
                col, lo, hi = replace_where
                cur.execute(sql.SQL("DELETE FROM {t} WHERE {c} >= %s AND {c} < %s").format(
                    t=target, c=sql.Identifier(col)), (lo, hi))
                if data.num_rows == 0:
                    return 0
            cur.execute(sql.SQL("CREATE TEMP TABLE {tmp} (LIKE {t} INCLUDING DEFAULTS) ON COMMIT DROP").format(
                tmp=tmp, t=target))
            cur.copy_expert(sql.SQL("COPY {tmp} ({cols}) FROM STDIN WITH (FORMAT csv)").format(
                tmp=tmp, cols=col_list).as_string(conn), buf)
            # DISTINCT ON: a batch holding one key twice keeps its last row instead of failing the merge
            cur.execute(sql.SQL(
                "INSERT INTO {t} ({cols}) SELECT DISTINCT ON ({keys}) {cols} FROM {tmp} ORDER BY {keys}, ctid DESC "
                "ON CONFLICT ({keys}) DO UPDATE SET {updates}").format(
                t=target, cols=col_list, keys=keys, tmp=tmp, updates=sql.SQL(", ").join(updates)))
            return data.num_rows
