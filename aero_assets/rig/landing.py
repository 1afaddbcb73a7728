"""Landing rig readings: CSV files from the inbox next to the `rig.readings` topic, and reading a day back.

A CSV is landed whole into one Parquet file named by its name and content hash, written to a
temporary name and renamed, so a retried landing of the same file rewrites the same file and a
crash leaves nothing half-written; only then does the file move to `processed/` (or, if it cannot
be read at all, to `rejected/` with a `<name>.reason.txt` beside it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from aero_assets.landing_state import parse_file_name, remove_temp_files, topic_lock
from aero_assets.rig.csv_inbox import CsvReport, RejectedFile, read_rig_csv, sha256_of
from aero_assets.rig.schema import LANDED_SCHEMA
from resources.lake import fsync_dir, make_dirs_durable

CSV_DIR = ("rig", "readings", "source=csv")


@dataclass
class CsvLanding:
    name: str
    sha256: str
    rows: int = 0
    bad_lines: int = 0
    days: list[str] = field(default_factory=list)
    path: Path | None = None
    rejected: str | None = None
    changed: str | None = None  # the file changed during its landing: nothing kept, left in the inbox
    moved_to: Path | None = None
    report: CsvReport | None = None
    seconds: float = 0.0


def inbox_dir(inbox_root: Path) -> Path:
    return inbox_root / "rig"


_NAME = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,200}$")


def checked_name(name: str) -> str:
    """A file name from the inbox as a run's config gives it: a bare name, never a path.

    People name files: spaces and letters like ü are fine; separators, control characters, `..`
    and hidden names are not (they would address something outside the inbox).
    """
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name or name.startswith("."):
        raise ValueError(f"inbox file name {name!r} is not allowed: give the bare name of a file directly in the "
                         "rig inbox (no '/', '\\', '..', control characters or leading '.')")
    return name


def land_csv(inbox_root: Path, lake_root: Path, name: str) -> CsvLanding:
    """Land one inbox file (bounded memory: block by block into a Parquet writer), then move it away."""
    t0 = time.perf_counter()
    name = checked_name(name)
    src = inbox_dir(inbox_root) / name
    if src.is_symlink():  # never follow a link out of the inbox (it could point at any file we can read)
        out = CsvLanding(name, "")
        out.rejected = "symbolic links are not followed: copy the file itself into the inbox"
        out.moved_to = _move(src, inbox_dir(inbox_root) / "rejected", "")
        _reason_file(out.moved_to, name, "", out.rejected)
        return out
    if not src.is_file():
        raise FileNotFoundError(f"{src} is not in the inbox (already processed, or never there)")
    with topic_lock(lake_root.joinpath(*CSV_DIR[:-1])):  # one CSV landing at a time: temp files are ours to remove
        remove_temp_files(lake_root.joinpath(*CSV_DIR))
        return _land_locked(inbox_root, lake_root, name, src, t0)


def _land_locked(inbox_root: Path, lake_root: Path, name: str, src: Path, t0: float) -> CsvLanding:
    before = src.stat()
    sha = sha256_of(src)
    out = CsvLanding(name, sha)
    stem = _safe_stem(name)
    dest = lake_root.joinpath(*CSV_DIR) / f"{stem}-{sha[:16]}.parquet"
    make_dirs_durable(dest.parent)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    days: set[str] = set()
    try:
        writer = None
        try:
            for table, rep in read_rig_csv(src, f"inbox/rig/{name}", time.time_ns()):
                if writer is None:
                    writer = pq.ParquetWriter(tmp, LANDED_SCHEMA, compression="lz4", use_dictionary=["rig_id", "day"])
                writer.write_table(table)
                days.update(pc.unique(table["day"]).to_pylist())
                out.report = rep
            if writer is None:  # a header and no data lines: an empty, valid file
                writer = pq.ParquetWriter(tmp, LANDED_SCHEMA)
        finally:
            if writer is not None:
                writer.close()
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(dest)
        fsync_dir(dest.parent)
    except RejectedFile as exc:
        out.rejected = str(exc)
        out.moved_to = _move(src, inbox_dir(inbox_root) / "rejected", sha)
        _reason_file(out.moved_to, name, sha, str(exc))
        _done_marker(src).unlink(missing_ok=True)
        out.seconds = time.perf_counter() - t0
        return out
    finally:
        tmp.unlink(missing_ok=True)
    after = src.stat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        # still being written: what was read is not the file, so nothing of it is kept and it stays in the
        # inbox; the sensor takes it again once it settles (its size is part of the run key)
        dest.unlink(missing_ok=True)
        out.changed = (f"{name} changed while it was landed ({before.st_size:,} -> {after.st_size:,} bytes): nothing "
                       "of it was kept; the inbox sensor takes it again once it is complete")
        out.seconds = time.perf_counter() - t0
        return out
    out.path = dest
    out.days = sorted(days)
    if out.report is not None:
        out.rows, out.bad_lines = out.report.rows, out.report.bad_lines
    out.moved_to = _move(src, inbox_dir(inbox_root) / "processed", sha)
    # the marker said "this file is complete"; left behind, it would vouch for the next file of that name
    _done_marker(src).unlink(missing_ok=True)
    out.seconds = time.perf_counter() - t0
    return out


def _done_marker(src: Path) -> Path:
    return src.with_name(f"{src.name}.done")


def _safe_stem(name: str) -> str:
    """The file's stem as a lake file name: any character outside letters, digits, _ . - becomes _."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", Path(name).stem)[:100] or "file"


def _reason_file(moved: Path, name: str, sha: str, reason: str) -> None:
    info = {"file": name, "sha256": sha, "reason": reason, "rejected_at": datetime.now(UTC).isoformat()}
    (moved.parent / f"{moved.name}.reason.txt").write_text(f"{reason}\n\n{json.dumps(info, indent=2)}\n")


def _move(src: Path, folder: Path, sha: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / src.name
    if (target.exists() or target.is_symlink()) and (not sha or target.is_symlink() or sha256_of(target) != sha):
        target = folder / f"{src.stem}-{sha[:12]}{src.suffix}"
    shutil.move(str(src), str(target))
    return target


def day_files(lake_root: Path, topic: str) -> list[Path]:
    """The landed files in landing order: the topic's in offset order, then the CSVs newest landed first.

    Landing order decides which copy of a duplicate is kept: a file rewritten with corrections wins over
    its earlier versions (their rows become duplicates of the correction), while a new file that reuses
    an old name but holds other days loses nothing. Listed once per materialization, so the rows read
    and the rows counted by the check come from the same files, whatever lands meanwhile.
    """
    topic_dir = lake_root / "landing" / topic
    kafka = sorted((parse_file_name(p.name)[1:3], p) for p in topic_dir.glob("*.parquet")
                   if parse_file_name(p.name) is not None)
    csv_files = list(lake_root.joinpath(*CSV_DIR).glob("*.parquet"))
    return [p for _, p in kafka] + sorted(csv_files, key=lambda p: (-p.stat().st_mtime_ns, p.name))


def day_rows(lake_root: Path, topic: str, day: str, files: list[Path] | None = None) -> pa.Table:
    """Every landed row of `day` (from `files`, default: `day_files`), with its origin, in landing order."""
    files = day_files(lake_root, topic) if files is None else files
    topic_dir = lake_root / "landing" / topic
    cond = ds.field("day") == day
    tables = []
    for path in files:
        t = ds.dataset(str(path), format="parquet").to_table(filter=cond)
        if not t.num_rows:
            continue
        if path.parent == topic_dir:  # a topic file: the origin is its partition and the row's offset
            partition = parse_file_name(path.name)[1]
            origin = pc.binary_join_element_wise(f"{topic}/{partition}/", t["_offset"].cast(pa.string()), "")
            t = t.set_column(t.schema.get_field_index("origin"), "origin", origin)
        tables.append(t.select(LANDED_SCHEMA.names).cast(LANDED_SCHEMA))
    return pa.concat_tables(tables) if tables else LANDED_SCHEMA.empty_table()


def count_day_rows(lake_root: Path, topic: str, day: str, files: list[Path] | None = None) -> int:
    """The day's landed rows counted from the files' own statistics path (for the check, not via `day_rows`)."""
    files = day_files(lake_root, topic) if files is None else files
    return int(sum(ds.dataset(str(f), format="parquet").count_rows(filter=ds.field("day") == day) for f in files))


def days_of(paths: list[Path]) -> list[str]:
    out: set[str] = set()
    for p in paths:
        col = pq.read_table(p, columns=["day"])["day"]
        out.update(v for v in pc.unique(col).to_pylist() if v)
    return sorted(out)


__all__ = ["CsvLanding", "count_day_rows", "day_rows", "days_of", "inbox_dir", "land_csv"]
