"""The rig core as one call, for measuring rows/s: clean -> score -> KPIs of every day.

`python -m aero_assets.rig.bench_core [rigs] [hours]` simulates, lands, then times this call three
times and prints the median (simulation and landing are not timed: they stand for Kafka).

Where the time goes on 10 M readings (100 rigs x 10 000 h), warm: cleaning ~0.9 s (dictionary-encoding
rig ids, the counting sort, the origin string gather, days), scoring ~0.45 s (two signals' median and
MAD over halves of the rigs on two threads, alert texts), KPIs ~0.1 s; a cold process spends another
second faulting in fresh memory (see `aero_assets/memory.py`).
"""

from __future__ import annotations

import statistics
import sys
import time

import pyarrow as pa

from aero_assets.rig.anomalies import score
from aero_assets.rig.cleaning import clean
from aero_assets.rig.kpis import kpis_by_day


def clean_score_kpis(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(scored, kpis) of a landed table; the quarantine is computed too but only its cost matters here."""
    clean_rows, _quarantined = clean(table)
    scored = score(clean_rows)
    return scored, kpis_by_day(scored)


def main(argv: list[str]) -> None:
    from aero_assets.rig.simulate import landed_table, simulate_rigs

    rigs = int(argv[0]) if argv else 100
    hours = float(argv[1]) if len(argv) > 1 else 10_000.0
    readings, _ = simulate_rigs(rigs=rigs, start_ns=1_767_225_600 * 10**9, hours=hours, seed=7)
    table = landed_table(readings)
    del readings
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        clean_score_kpis(table)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    runs = ", ".join(f"{t:.2f}" for t in times)
    print(f"{table.num_rows:,} rows: median {med:.2f} s ({runs}) = {table.num_rows / med / 1e6:.2f} M rows/s")


if __name__ == "__main__":
    main(sys.argv[1:])
