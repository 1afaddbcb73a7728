"""What a topic's landing keeps in the lake besides its data: file names, a lock and a checkpoint.

Layout under `<lake>/landing/<topic>/`:
- `<split>=<value>/<incarnation>-p<partition>-<first>-<last>.parquet`: landed rows, named by the
  offset range they came from, so landing a range again overwrites the same file;
- `.landing.lock`: an exclusive `flock` held for a whole landing, so two landings of one topic
  (a misconfigured pool, a second deployment on the same lake) queue instead of interleaving;
- `_checkpoint/<incarnation>.json`: the next offset per partition whose rows are all durable,
  written after a chunk's files and before the Kafka commit. When the consumer group has no
  committed offset (a first landing, expired group offsets) this, not "the end of the files that
  happen to exist", is where landing resumes: a crash between two split folders' writes leaves
  files past the checkpoint, and those are orphans to remove, never a reason to skip ahead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from resources.lake import make_dirs_durable, write_bytes_atomic

LOCK_NAME = ".landing.lock"
CHECKPOINT_DIR = "_checkpoint"


class LandingLockTimeout(TimeoutError):
    """Another landing of the topic held the lock for longer than we were willing to wait."""


def file_name(incarnation: str, partition: int, first: int, last: int) -> str:
    return f"{incarnation}-p{partition}-{first:020d}-{last:020d}.parquet"


def parse_file_name(name: str) -> tuple[str, int, int, int] | None:
    stem = name.removesuffix(".parquet")
    parts = stem.split("-")
    if len(parts) != 4 or not parts[1].startswith("p"):
        return None
    try:
        return parts[0], int(parts[1][1:]), int(parts[2]), int(parts[3])
    except ValueError:
        return None


def landed_files(topic_dir: Path, incarnation: str | None = None, split: tuple[str, str] | None = None) -> list[Path]:
    """Landed files of a topic, optionally of one incarnation and one split value, in offset order."""
    base = topic_dir / f"{split[0]}={split[1]}" if split else topic_dir
    pattern = "*.parquet" if split else "**/*.parquet"
    out = []
    for p in base.glob(pattern):
        parsed = parse_file_name(p.name)
        if parsed and (incarnation is None or parsed[0] == incarnation):
            out.append((parsed[1], parsed[2], p))
    return [p for _, _, p in sorted(out)]


def partition_files(topic_dir: Path, incarnation: str, partition: int) -> list[tuple[Path, int, int]]:
    """(path, first, last) of every file landed for one (incarnation, partition), in any split folder."""
    out = []
    for p in topic_dir.glob(f"**/{incarnation}-p{partition}-*.parquet"):
        parsed = parse_file_name(p.name)
        if parsed:
            out.append((p, parsed[2], parsed[3]))
    return out


def remove_files_from(files: list[tuple[Path, int, int]], position: int) -> int:
    """Delete those of a partition's `files` (from `partition_files`) whose first offset is at or past
    `position`: written by a landing that never finished."""
    orphans = [p for p, first, _ in files if first >= position]
    for p in orphans:
        p.unlink(missing_ok=True)
    return len(orphans)


def remove_temp_files(topic_dir: Path) -> int:
    """Delete `.*.tmp` files left by killed writers; only safe while holding the topic's lock."""
    count = 0
    for p in topic_dir.glob("**/.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            count += 1
    return count


@contextlib.contextmanager
def topic_lock(topic_dir: Path, timeout_s: float = 600.0, poll_s: float = 0.1) -> Iterator[float]:
    """Hold the topic's exclusive landing lock; yields the seconds spent waiting for it.

    `flock` is released by the kernel when the holder dies, so a killed landing never leaves the
    topic locked. It is per host (and per NFS server with lock support): lakes shared between
    hosts on object storage need the Dagster pool, which every Aero deployment configures as well.
    """
    make_dirs_durable(topic_dir)
    path = topic_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    t0 = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() - t0 > timeout_s:
                    holder = path.read_text(errors="replace").strip() or "unknown"
                    raise LandingLockTimeout(
                        f"another landing of {topic_dir.name} ({holder}) held {path} for more than "
                        f"{timeout_s:.0f}s; it is still running or hung. Nothing was landed; try again later."
                    ) from None
                time.sleep(poll_s)
        waited = time.monotonic() - t0
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield waited
    finally:
        os.close(fd)  # releases the flock


@dataclass
class Checkpoint:
    """Next offset per partition whose rows are durable in the lake, and where the DLQ ended then."""

    incarnation: str
    partitions: dict[int, int] = field(default_factory=dict)
    dlq_ends: dict[int, int] = field(default_factory=dict)
    exists: bool = False  # loaded from the lake (False: this lake never landed the incarnation)

    @staticmethod
    def path(topic_dir: Path, incarnation: str) -> Path:
        return topic_dir / CHECKPOINT_DIR / f"{incarnation}.json"

    @classmethod
    def load(cls, topic_dir: Path, incarnation: str) -> Checkpoint:
        p = cls.path(topic_dir, incarnation)
        try:
            obj = json.loads(p.read_text())
            cp = cls(incarnation, {int(k): int(v) for k, v in obj.get("partitions", {}).items()},
                     {int(k): int(v) for k, v in obj.get("dlq_ends", {}).items()}, exists=True)
        except FileNotFoundError:
            return cls(incarnation)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # a torn checkpoint cannot happen (atomic rename); an edited one must not be trusted
            raise RuntimeError(f"landing checkpoint {p} is unreadable ({type(exc).__name__}: {exc}); delete it "
                               "to resume from the consumer group's committed offsets") from exc
        if any(v < 0 for v in [*cp.partitions.values(), *cp.dlq_ends.values()]):
            raise RuntimeError(f"landing checkpoint {p} holds a negative offset; delete it to resume from the "
                               "consumer group's committed offsets")
        return cp

    def save(self, topic_dir: Path) -> None:
        p = self.path(topic_dir, self.incarnation)
        body = json.dumps({"incarnation": self.incarnation,
                           "partitions": {str(k): v for k, v in sorted(self.partitions.items())},
                           "dlq_ends": {str(k): v for k, v in sorted(self.dlq_ends.items())}})
        write_bytes_atomic(p, body.encode())
