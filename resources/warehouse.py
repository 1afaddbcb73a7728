"""The warehouse: one DuckDB file with a schema per domain and views over the lake.

Analysts open one file and query `windtunnel.raw_run`; the data itself stays in Parquet so runs
for different partitions never contend for DuckDB's single-writer lock (DESIGN.md, lake-first).
Creating a view is a short write; dagster-duckdb's connect retries cover the rare overlap.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from dagster_duckdb import DuckDBResource

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def _quote_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"{name!r} is not a safe SQL identifier (lowercase letters, digits, _).")
    return name


class WarehouseResource(DuckDBResource):
    """DuckDB catalog over the lake (`$AERO_HOME/warehouse.duckdb`)."""

    def refresh_view(self, schema: str, name: str, base_dir: Path, pattern: str = "**/*.parquet") -> bool:
        """(Re)create `schema.name` as a view over the Parquet files under `base_dir`.

        Returns False (and creates nothing) while no file exists: DuckDB refuses a view over an
        empty glob, and an asset that has not landed anything yet has nothing to show.
        """
        schema, name = _quote_ident(schema), _quote_ident(name)
        if not any(base_dir.glob(pattern)):
            return False
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        glob = str(base_dir / pattern).replace("'", "''")
        with self.get_connection() as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            conn.execute(
                f"CREATE OR REPLACE VIEW {schema}.{name} AS SELECT * FROM "
                # hive_types_autocast off: partition values (run ids like "007") stay strings
                f"read_parquet('{glob}', hive_partitioning = true, hive_types_autocast = false, "
                "union_by_name = true)"
            )
        return True

    def try_refresh_view(self, schema: str, name: str, base_dir: Path, log: logging.Logger) -> bool:
        """`refresh_view` that never fails the caller: the view is a convenience, the lake file is the data.

        A landing or a QC step must not fail because an analyst holds the DuckDB file open.
        """
        try:
            return self.refresh_view(schema, name, base_dir)
        except Exception as exc:  # lock held by another process, disk full, ...
            log.warning(f"could not refresh the DuckDB view {schema}.{name}: {exc}")
            return False
