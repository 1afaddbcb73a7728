"""`aero bench serve` at a tiny size: a real `aero serve` process, every answer a 200 within max_points."""

from aero_assets.bench.serve import MAX_POINTS, bench_serve

KEYS = {"series_p50_ms", "series_p95_ms", "series_p99_ms", "series_rps", "alerts_rps", "alerts_p95_ms", "clients",
        "baseline_series_ms", "points_per_channel", "targets"}


def test_bench_serve_small():
    figures = bench_serve(clients=4, requests=40, duration_s=5.0, alerts=300, baseline_repeats=1)
    assert set(figures) >= KEYS
    assert figures["non_200"] == 0 and figures["clients"] == 4
    assert 0 < figures["points_per_channel"] <= MAX_POINTS
    assert figures["alerts_total"] == 300  # an episode written by two hours is served once
    assert figures["series_p50_ms"] <= figures["series_p95_ms"] <= figures["series_p99_ms"]
    assert figures["series_rps"] > 0 and figures["alerts_rps"] > 0 and figures["baseline_series_ms"] > 0
    assert figures["targets"] == {"series_p95_ms": "<= 50"}
