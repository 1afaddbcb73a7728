"""How well the detector finds what the simulator planted: precision and recall by (rig_id, ts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def precision_recall(scored: pa.Table, ground_truth: pd.DataFrame) -> dict:
    """Detected anomalies (`anomaly` true) against ground-truth anomalies (`anomaly` true), matched by (rig_id, ts).

    A reading counts once however many faults or signals touched it. Returns precision, recall,
    true_positives, false_positives, false_negatives; precision (recall) is 1.0 when nothing was
    detected (expected), so an empty day is not a failure.
    """
    found = scored.filter(scored["anomaly"]).select(["rig_id", "ts"])
    detected = pd.DataFrame(
        {
            "rig_id": found["rig_id"].to_numpy(zero_copy_only=False).astype(object),
            "ts": pc.cast(found["ts"], pa.int64()).to_numpy(),
        }
    ).drop_duplicates()
    truth = ground_truth.loc[ground_truth["anomaly"].astype(bool), ["rig_id", "ts"]]
    expected = pd.DataFrame(
        {"rig_id": truth["rig_id"].astype(str).to_numpy(dtype=object), "ts": truth["ts"].to_numpy(dtype=np.int64)}
    ).drop_duplicates()
    tp = len(detected.merge(expected, on=["rig_id", "ts"]))
    fp, fn = len(detected) - tp, len(expected) - tp
    return {
        "precision": tp / len(detected) if len(detected) else 1.0,
        "recall": tp / len(expected) if len(expected) else 1.0,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
    }
