"""The warehouse: one DuckDB file with a schema per domain and views over the lake.

Analysts open one file and query `windtunnel.raw_run`; the data itself stays in Parquet so runs
for different partitions never contend for DuckDB's single-writer lock (DESIGN.md, lake-first).

The views are a convenience, never on a data path: a view over a Parquet glob sees new files by
itself, so it only has to be created once. An analyst holding the file read-write locks everyone
else out, and dagster-duckdb's `get_connection` waits ~100 s of backoff for that lock; so views are
refreshed through `fast_connection`, which gives up after a couple of seconds, leaves a marker in
`<database>.pending/`, and `warehouse_views_sensor` creates them once the file is free again.
No landing step touches the warehouse at all.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
from dagster_duckdb import DuckDBResource

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
FAST_TIMEOUT_S = 2.0
_LOCK_HELD = "Could not set lock on file"  # DuckDB's message when another process holds the file


class WarehouseBusy(RuntimeError):
    """Another process holds the DuckDB file; try again later."""


class WarehouseUnusable(RuntimeError):
    """The DuckDB file cannot be opened for another reason than a lock (corrupt, unreadable)."""


def _quote_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"{name!r} is not a safe SQL identifier (lowercase letters, digits, _).")
    return name


@dataclass(frozen=True)
class ViewSpec:
    """`schema.name` as a view over the Parquet files under `base_dir`."""

    schema: str
    name: str
    base_dir: Path

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


class WarehouseResource(DuckDBResource):
    """DuckDB catalog over the lake (`$AERO_HOME/warehouse.duckdb`)."""

    @property
    def pending_dir(self) -> Path:
        return Path(f"{self.database}.pending")

    @contextlib.contextmanager
    def fast_connection(self, timeout_s: float = FAST_TIMEOUT_S) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection, or `WarehouseBusy` after `timeout_s` (not dagster-duckdb's ~100 s)."""
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while True:
            try:
                conn = duckdb.connect(self.database, read_only=False, config=dict(self.connection_config))
                break
            except duckdb.Error as exc:
                if _LOCK_HELD not in str(exc):  # not a held lock: a corrupt file, a permission error
                    raise WarehouseUnusable(f"{self.database} cannot be opened: {exc}. Move it away; "
                                            "warehouse_views_sensor recreates the views in a new file.") from None
                if time.monotonic() + delay > deadline:  # someone holds the file
                    raise WarehouseBusy(f"{self.database} is locked by another process ({exc})") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        try:
            yield conn
        finally:
            conn.close()

    def refresh_view(self, schema: str, name: str, base_dir: Path, pattern: str = "**/*.parquet",
                     timeout_s: float = FAST_TIMEOUT_S) -> bool:
        """(Re)create `schema.name` as a view over the Parquet files under `base_dir`.

        Returns False (and creates nothing) while no file exists: DuckDB refuses a view over an
        empty glob, and an asset that has not landed anything yet has nothing to show.
        """
        return bool(self._create_views([ViewSpec(schema, name, base_dir)], timeout_s, pattern))

    def _create_views(self, specs: Iterable[ViewSpec], timeout_s: float, pattern: str = "**/*.parquet") -> list[str]:
        todo = [s for s in specs if any(s.base_dir.glob(pattern))]
        if not todo:
            return []
        with self.fast_connection(timeout_s) as conn:
            for s in todo:
                schema, name = _quote_ident(s.schema), _quote_ident(s.name)
                glob = str(s.base_dir / pattern).replace("'", "''")
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                conn.execute(
                    f"CREATE OR REPLACE VIEW {schema}.{name} AS SELECT * FROM "
                    # hive_types_autocast off: partition values (run ids like "007") stay strings
                    f"read_parquet('{glob}', hive_partitioning = true, hive_types_autocast = false, "
                    "union_by_name = true)"
                )
                (self.pending_dir / s.qualified).unlink(missing_ok=True)
        return [s.qualified for s in todo]

    def try_refresh_view(self, schema: str, name: str, base_dir: Path, log: logging.Logger,
                         timeout_s: float = FAST_TIMEOUT_S) -> bool:
        """`refresh_view` that never fails or stalls the caller: the view is a convenience, the lake file is the data.

        When the file is busy, a marker is left for `warehouse_views_sensor`, which retries.
        """
        try:
            return self.refresh_view(schema, name, base_dir, timeout_s=timeout_s)
        except WarehouseBusy as exc:
            self.pending_dir.mkdir(parents=True, exist_ok=True)
            (self.pending_dir / f"{schema}.{name}").write_text(str(base_dir))
            log.warning(f"DuckDB view {schema}.{name} not refreshed: {exc}. warehouse_views_sensor "
                        "creates it once the file is free; the data is in the lake meanwhile.")
            return False
        except Exception as exc:  # disk full, a corrupt file, ...
            log.warning(f"could not refresh the DuckDB view {schema}.{name}: {exc}")
            return False

    def pending(self) -> list[str]:
        if not self.pending_dir.exists():
            return []
        return sorted(p.name for p in self.pending_dir.iterdir() if not p.name.startswith("."))

    def missing_views(self, specs: Iterable[ViewSpec], timeout_s: float = FAST_TIMEOUT_S) -> list[ViewSpec]:
        """Specs whose lake folder has data but whose view is absent or marked pending."""
        specs = [s for s in specs if s.base_dir.exists() and any(s.base_dir.glob("**/*.parquet"))]
        if not specs:
            return []
        pending = set(self.pending())
        with self.fast_connection(timeout_s) as conn:
            have = {f"{a}.{b}" for a, b in conn.execute(
                "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        return [s for s in specs if s.qualified not in have or s.qualified in pending]

    def ensure_views(self, specs: Iterable[ViewSpec], timeout_s: float = FAST_TIMEOUT_S) -> list[str]:
        """Create missing or pending views; raises `WarehouseBusy` when the file is held elsewhere."""
        return self._create_views(self.missing_views(specs, timeout_s), timeout_s)
