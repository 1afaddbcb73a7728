"""Planted episodes (simulator ground truth) against the alert episodes found: detection per episode."""

from __future__ import annotations

import pandas as pd

GRACE_NS = 120 * 1_000_000_000  # an alert may open this long after its planted episode ended (still draining)


def score(ground_truth: list[dict], episodes: pd.DataFrame, data_end_ns: int | None = None) -> dict:
    """Recall per expected alert type, episodes detected in full, and alerts no planted episode explains.

    Episodes still running at `data_end_ns` are left out: the data cannot show them yet.
    """
    found = episodes[["vehicle_id", "tire", "alert_type", "opened_at", "alert_id"]].copy() if len(episodes) else \
        pd.DataFrame(columns=["vehicle_id", "tire", "alert_type", "opened_at", "alert_id"])
    explained: set[str] = set()
    for gt in ground_truth:  # an alert during any planted episode, finished or not, is explained
        explained.update(found[(found.vehicle_id == gt["vehicle_id"]) & (found.tire == gt["tire"])
                               & (found.opened_at >= gt["start_ns"])
                               & (found.opened_at <= gt["end_ns"] + GRACE_NS)].alert_id)
    if data_end_ns is not None:
        ground_truth = [g for g in ground_truth if g["end_ns"] <= data_end_ns]
    expected = detected = full = 0
    misses = []
    for gt in ground_truth:
        ok_all = True
        for kind in gt["expected_alerts"]:
            expected += 1
            hit = found[(found.vehicle_id == gt["vehicle_id"]) & (found.tire == gt["tire"])
                        & (found.alert_type == kind) & (found.opened_at >= gt["start_ns"])
                        & (found.opened_at <= gt["end_ns"] + GRACE_NS)]
            if len(hit):
                detected += 1
            else:
                ok_all = False
                misses.append(f"{gt['vehicle_id']}/{gt['tire']} {gt['kind']} at {gt['start']}: no {kind}")
        full += ok_all
    false_alerts = sorted(set(found.alert_id) - explained)
    return {"planted_episodes": len(ground_truth), "episodes_fully_detected": full,
            "expected_alerts": expected, "alerts_detected": detected,
            "recall": round(detected / expected, 4) if expected else 1.0,
            "false_alerts": len(false_alerts), "misses": misses[:20]}
