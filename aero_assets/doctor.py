"""`aero doctor`: is this machine ready to run Aero, and if not, what to fix.

Each check gives one line, ok / warn / FAIL, and for anything not ok the command or setting that
fixes it; the exit code is 1 when any check failed, so scripts (and CI) can gate on it. The
checks are read-only: nothing is started, created or killed.

The one check that needs explaining is stale processes on Aero's ports: `aero demo` refuses a
broker it did not start, but a user who does not know why sees only the refusal. Doctor names
the process holding each port (by reading /proc: which process owns the listening socket), says
whether it is an embedded broker whose `aero` parent is gone (left behind, with an old session's
topics and offsets), and prints the `kill` that frees the port.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from resources.settings import Settings

OK, WARN, FAIL = "ok", "warn", "FAIL"
MIN_FREE_BYTES = 2 * 1024**3  # below this a 10 M-row landing or a model training may not fit
LOW_FREE_BYTES = 10 * 1024**3
UI_PORT = 3000


@dataclass(frozen=True)
class Finding:
    status: str
    check: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:>4}  {self.check}: {self.detail}"
        return text + (f"\n      fix: {self.fix}" if self.fix else "")


# -- which process listens on a port (Linux /proc; elsewhere: unknown) ---------------------------------

def listening_pids(port: int) -> list[int]:
    """Pids of the processes holding a listening TCP socket on `port` (IPv4 or IPv6); [] if none or unknown."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return []
    wanted = {f"socket:[{i}]" for i in inodes}
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(str(fd.readlink()) in wanted for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return sorted(pids)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def short_command(cmd: str, limit: int = 100) -> str:
    """A command line as a person reads it: no interpreter, the program's basename ("aero broker --port 9092"),
    so a long install path never hides which command it is."""
    words = cmd.split()
    while len(words) > 1 and Path(words[0]).name.startswith("python"):
        words = words[1:]
    if words:
        words[0] = Path(words[0]).name
    text = " ".join(words)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _aero_parent(pid: int) -> tuple[int, str] | None:
    """The nearest ancestor that is an `aero` command (demo, broker, stream), if any."""
    seen = 0
    ppid = parent_pid(pid)
    while ppid and ppid > 1 and seen < 16:
        cmd = cmdline(ppid)
        if "aero " in f"{cmd} " and any(f" {w}" in cmd for w in ("demo", "broker", "stream")):
            return ppid, cmd
        ppid, seen = parent_pid(ppid), seen + 1
    return None


def check_port(port: int, role: str) -> Finding:
    from resources.embedded_broker import port_is_open

    if not port_is_open("127.0.0.1", port):
        return Finding(OK, f"port {port} ({role})", "free")
    pids = listening_pids(port)
    if not pids:
        return Finding(WARN, f"port {port} ({role})", "in use by a process this user cannot see",
                       f"find it with `ss -ltnp 'sport = :{port}'`")
    pid = pids[0]
    cmd = cmdline(pid)
    owner = _aero_parent(pid)
    if owner is not None:
        return Finding(OK, f"port {port} ({role})", f"held by pid {pid}, started by the running "
                                                    f"`{short_command(owner[1])}` (pid {owner[0]})")
    is_broker = " broker " in f" {cmd} " and "--cluster-id" in cmd
    if is_broker and "aero-" in cmd:
        return Finding(FAIL, f"port {port} ({role})",
                       f"a stale embedded broker, pid {pid}, whose `aero` parent is gone: it holds an old session's "
                       f"topics and offsets, and `aero demo` will refuse it ({short_command(cmd)})",
                       f"kill {pid}   (or point AERO_KAFKA_BOOTSTRAP at a free port)")
    return Finding(WARN, f"port {port} ({role})", f"held by pid {pid}: {short_command(cmd, 120)}",
                   f"stop it (kill {pid}) or choose another port")


# -- the checks ------------------------------------------------------------------------------------------

def check_broker(settings: Settings) -> list[Finding]:
    from resources.kafka import BrokerUnavailable, KafkaResource

    where = settings.kafka.bootstrap_servers
    try:
        cluster_id, topics = KafkaResource.from_settings(settings.kafka).cluster(timeout=3)
    except BrokerUnavailable as exc:
        local = settings.env == "local"
        return [Finding(FAIL if not local else WARN, "broker", f"{where} does not answer: {exc}",
                        "`aero demo` starts one; or `aero broker`; or set AERO_KAFKA_BOOTSTRAP" if local
                        else "check AERO_KAFKA_BOOTSTRAP and the cluster's listeners/credentials")]
    missing = sorted(set(settings.topics.all()) - set(topics))
    found = [Finding(OK, "broker", f"{where} answers (cluster id {cluster_id}, {len(topics)} topics)")]
    if missing:
        found.append(Finding(WARN, "topics", f"{len(missing)} of Aero's topics missing: {', '.join(missing[:8])}",
                             "`aero demo` creates them; in production create them with the partitions you need"))
    else:
        found.append(Finding(OK, "topics", f"all {len(settings.topics.all())} of Aero's topics exist"))
    return found


def check_instance(settings: Settings) -> list[Finding]:
    home = os.environ.get("DAGSTER_HOME")
    found = []
    if not home:
        found.append(Finding(WARN, "DAGSTER_HOME", f"not set; `aero demo` uses {settings.dagster_home}",
                             f"export DAGSTER_HOME={settings.dagster_home} before `dagster` commands"))
    elif not (Path(home) / "dagster.yaml").is_file():
        found.append(Finding(FAIL, "DAGSTER_HOME", f"{home} has no dagster.yaml",
                             "copy the repo's dagster.yaml there (or run `aero demo` once with AERO_HOME)"))
    else:
        try:
            from dagster._core.instance.config import dagster_instance_config

            dagster_instance_config(home)
            found.append(Finding(OK, "DAGSTER_HOME", f"{home}/dagster.yaml is valid"))
        except Exception as exc:  # (Dagster raises several kinds; the message is what matters)
            found.append(Finding(FAIL, "DAGSTER_HOME", f"{home}/dagster.yaml is invalid: {str(exc)[:200]}",
                                 "fix the file (compare with the repo's dagster.yaml)"))
    if settings.dagster_pg_url:
        found.append(_check_postgres(settings.dagster_pg_url))
    else:
        found.append(Finding(OK, "instance storage", "SQLite under DAGSTER_HOME (AERO_DAGSTER_PG_URL: Postgres)"))
    return found


def _check_postgres(url: str) -> Finding:
    import psycopg2

    libpq = url.replace("postgresql+psycopg2://", "postgresql://", 1)
    host = libpq.split("@")[-1].split("/")[0]
    try:
        with psycopg2.connect(libpq, connect_timeout=3) as conn, conn.cursor() as cur:
            cur.execute("show server_version")
            version = cur.fetchone()[0]
        conn.close()
    except psycopg2.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Finding(FAIL, "instance storage", f"Postgres at {host} does not accept connections: {first}",
                       "start Postgres (e.g. `pg_ctlcluster 15 main start`), or fix AERO_DAGSTER_PG_URL")
    return Finding(OK, "instance storage", f"Postgres {version} at {host}")


def check_lake(settings: Settings) -> list[Finding]:
    found = []
    home = settings.home
    probe = home if home.exists() else next((p for p in home.parents if p.exists()), Path("/"))
    if not os.access(probe, os.W_OK):
        found.append(Finding(FAIL, "AERO_HOME", f"{home} is not writable", "set AERO_HOME to a writable folder"))
    else:
        found.append(Finding(OK, "AERO_HOME", f"{home}" + ("" if home.exists() else " (created on first use)")))
    lake = settings.lake_dir
    found.append(Finding(OK, "lake", f"{lake}: {sum(1 for _ in lake.iterdir())} topic/asset folders")
                 if lake.is_dir() else Finding(OK, "lake", f"{lake} (empty: nothing landed yet)"))
    found.append(_check_warehouse(settings.warehouse_path))
    usage = shutil.disk_usage(probe)
    free = f"{usage.free / 1024**3:.1f} GiB free of {usage.total / 1024**3:.0f} GiB under {probe}"
    if usage.free < MIN_FREE_BYTES:
        found.append(Finding(FAIL, "disk", free, "free space or move AERO_HOME: landings need room to write"))
    elif usage.free < LOW_FREE_BYTES:
        found.append(Finding(WARN, "disk", free, "a 10 M-row landing or a training run may not fit"))
    else:
        found.append(Finding(OK, "disk", free))
    return found


def _check_warehouse(path: Path) -> Finding:
    if not path.exists():
        return Finding(OK, "warehouse", f"{path} (created by the first views sensor tick)")
    import duckdb

    try:
        with duckdb.connect(str(path), read_only=True) as con:
            views = con.execute("select count(*) from duckdb_views() where not internal").fetchone()[0]
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            return Finding(OK, "warehouse", f"{path} (open for writing by a running sensor; not read)")
        return Finding(FAIL, "warehouse", f"{path} cannot be opened: {str(exc)[:160]}",
                       "move the file away; the views sensor rebuilds it from the lake")
    except duckdb.Error as exc:
        return Finding(FAIL, "warehouse", f"{path} cannot be opened: {str(exc)[:160]}",
                       "move the file away; the views sensor rebuilds it from the lake")
    return Finding(OK, "warehouse", f"{path}: {views} views")


_PACKAGES = ("dagster", "dagster-webserver", "dagster-postgres", "confluent-kafka", "pyarrow", "duckdb", "numpy",
             "numba", "torch", "prophet")


def check_versions() -> list[Finding]:
    found = [Finding(OK if sys.version_info >= (3, 11) else FAIL, "python", sys.version.split()[0],
                     "" if sys.version_info >= (3, 11) else "Aero needs Python 3.11 or newer")]
    have, missing = [], []
    for name in _PACKAGES:
        try:
            have.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        found.append(Finding(FAIL, "packages", f"not installed: {', '.join(missing)}", "make setup"))
    dagster_ok = metadata.version("dagster").startswith("1.13.") if "dagster" not in missing else False
    found.append(Finding(OK if dagster_ok else WARN, "versions", ", ".join(have),
                         "" if dagster_ok else "Aero is verified against dagster 1.13 (make setup installs it)"))
    return found


def run_checks(settings: Settings, ui_port: int = UI_PORT) -> list[Finding]:
    findings = [*check_versions(), *check_instance(settings), *check_lake(settings)]
    if settings.env == "local":
        findings.append(check_port(settings.kafka.first_port, "Kafka broker"))
        findings.append(check_port(ui_port, "Dagster UI"))
    findings.extend(check_broker(settings))
    return findings


def report(findings: list[Finding]) -> tuple[str, int]:
    """(the text to print, the exit code: 1 when any check failed)."""
    failed = sum(f.status == FAIL for f in findings)
    warned = sum(f.status == WARN for f in findings)
    summary = ("aero doctor: " + (f"{failed} problem(s) to fix" if failed else "ready")
               + (f", {warned} warning(s)" if warned else ""))
    return "\n".join([*(f.line() for f in findings), summary]), 1 if failed else 0
