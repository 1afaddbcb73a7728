"""A small GRU forecaster for hourly temperature, trained on a `TrainingSet`, with early stopping.

Design choices, and why:

* The network predicts the *change* from the last input (output = last input + head(GRU state)).
  Hourly temperature is so autocorrelated that persistence is already a strong forecaster; making
  persistence the network's starting point means a freshly initialised model is never worse than
  it, and the GRU only has to learn the daily cycle and the pull back to the mean.
* Early stopping on the validation part keeps the best epoch's weights (a copy of the state dict),
  so a long `epochs` is a ceiling, not a cost: training usually stops well before it.
* Determinism for a seed: torch's global RNG seeded, a private generator for shuffling,
  deterministic algorithms where available and a fixed thread count. The global torch settings
  are restored afterwards, because this runs inside a long-lived Dagster process.
* torch is imported inside the functions only: the Dagster definitions import this module and
  must stay cheap to load.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from aero_assets.forecast.dataset import TrainingSet
from aero_assets.forecast.model_files import (
    ModelLoadError,
    describes_model,
    open_model_folder,
    read_model_data,
    save_model_folder,
)

MIN_TRAIN_WINDOWS = 16
FALLBACK_VALIDATION_FRACTION = 0.1
WEIGHTS_FILE = "weights.pt"
META_FILE = "gru.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class GRUConfig:
    """Hyper-parameters; the defaults are tuned so one year of hourly data trains in well under a minute on 2 cores."""

    hidden: int = 32
    layers: int = 1
    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3
    patience: int = 5  # epochs without a validation improvement before stopping
    seed: int = 0
    max_seconds: float | None = None  # wall-clock budget for the training loop (checked after each epoch)
    threads: int = 2

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.layers < 1 or self.epochs < 1 or self.batch_size < 1 or self.threads < 1:
            raise ValueError(f"hidden, layers, epochs, batch_size and threads must be >= 1: {self}")
        if not self.lr > 0 or self.patience < 1:
            raise ValueError(f"lr must be > 0 and patience >= 1: {self}")


def _network(lookback: int, horizon: int, hidden: int, layers: int) -> Any:
    """The torch module (built here so `torch` is only imported when a model is trained or used)."""
    import torch
    from torch import nn

    class _GRUForecaster(nn.Module):
        """GRU over the input window; a linear head adds per-step deltas to the last input."""

        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(input_size=1, hidden_size=hidden, num_layers=layers, batch_first=True)
            self.head = nn.Linear(hidden, horizon)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, lookback) scaled
            _, h = self.gru(x.unsqueeze(-1))
            return x[:, -1:] + self.head(h[-1])

    del lookback  # the GRU is length-agnostic; lookback is validated at predict time
    return _GRUForecaster()


@dataclass
class TrainedGRU:
    """A trained GRU with everything needed to forecast in degC and to explain how it was trained."""

    state_dict: dict[str, Any]
    config: GRUConfig
    lookback: int
    horizon: int
    mean: float
    std: float
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: epoch, train_loss, val_loss, seconds
    best_epoch: int = 0  # 1-based epoch whose weights are kept
    train_seconds: float = 0.0
    stopped_early: bool = False
    stop_reason: str = ""  # "patience", "max_seconds" or "epochs"
    validation_source: str = "validation"  # or "last 10 % of train" when the set had no validation windows
    n_train: int = 0
    n_val: int = 0
    _module: Any = field(default=None, init=False, repr=False, compare=False)

    def _net(self) -> Any:
        if self._module is None:
            net = _network(self.lookback, self.horizon, self.config.hidden, self.config.layers)
            net.load_state_dict(self.state_dict)
            net.eval()
            self._module = net
        return self._module

    def predict(self, X_raw: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """(n, horizon) forecasts in degC from (n, lookback) unscaled inputs in degC.

        Rows with a NaN/inf input get NaN forecasts (a gap in the inputs must not crash a
        prediction run, nor produce a number). Batched, without autograd.
        """
        import torch

        X = np.asarray(X_raw, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.lookback:
            raise ValueError(f"expected inputs of shape (n, {self.lookback}), got {X.shape}")
        out = np.full((X.shape[0], self.horizon), np.nan)
        ok = np.isfinite(X).all(axis=1)
        if not ok.any():
            return out
        scaled = torch.from_numpy(((X[ok] - self.mean) / self.std).astype(np.float32))
        net = self._net()
        with torch.inference_mode():
            pieces = [net(chunk).numpy() for chunk in torch.split(scaled, batch_size)]
        out[ok] = np.concatenate(pieces).astype(float) * self.std + self.mean
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-able description (everything but the weights), written to gru.json and to run metadata."""
        return {
            "format_version": FORMAT_VERSION,
            "config": asdict(self.config),
            "lookback": self.lookback,
            "horizon": self.horizon,
            "mean": self.mean,
            "std": self.std,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "train_seconds": self.train_seconds,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "validation_source": self.validation_source,
            "n_train": self.n_train,
            "n_val": self.n_val,
        }

    def save(self, folder: Path) -> list[Path]:
        """Write weights.pt (the state dict) and gru.json into `folder`; returns the files written."""
        import torch

        return save_model_folder(folder, WEIGHTS_FILE, lambda path: torch.save(self.state_dict, path), META_FILE,
                                 self.summary())

    @classmethod
    def load(cls, folder: Path) -> TrainedGRU:
        """Read a folder written by `save`; ModelLoadError if a file is missing, truncated or does not fit."""
        import torch

        meta, weights = open_model_folder(folder, META_FILE, WEIGHTS_FILE)
        with describes_model(folder, META_FILE, "GRU"):
            config = GRUConfig(**meta["config"])
            model = cls(
                state_dict={},
                config=config,
                lookback=int(meta["lookback"]),
                horizon=int(meta["horizon"]),
                mean=float(meta["mean"]),
                std=float(meta["std"]),
                history=list(meta.get("history", [])),
                best_epoch=int(meta.get("best_epoch", 0)),
                train_seconds=float(meta.get("train_seconds", 0.0)),
                stopped_early=bool(meta.get("stopped_early", False)),
                stop_reason=str(meta.get("stop_reason", "")),
                validation_source=str(meta.get("validation_source", "validation")),
                n_train=int(meta.get("n_train", 0)),
                n_val=int(meta.get("n_val", 0)),
            )
        state = read_model_data(weights, lambda path: torch.load(path, map_location="cpu", weights_only=True),
                                "cannot be read")
        if not isinstance(state, dict):
            raise ModelLoadError(f"{weights} does not hold a state dict")
        model.state_dict = state
        try:
            model._net()
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ModelLoadError(f"{weights} does not fit the architecture in {META_FILE} ({exc})") from exc
        return model


def _split_for_training(training_set: TrainingSet, scaler: tuple[float, float] | None = None,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Train and early-stopping windows (scaled); without validation windows, the last 10 % of train.

    `scaler` (mean, std) replaces the training set's own, for a fine-tune that keeps its model's inputs.
    """
    if scaler is None:
        X_tr, y_tr, _ = training_set.part("train")
        X_va, y_va, _ = training_set.part("validation")
    else:
        mean, std = scaler
        X_tr, y_tr, _ = ((a - mean) / std if i < 2 else a for i, a in enumerate(training_set.raw("train")))
        X_va, y_va, _ = ((a - mean) / std if i < 2 else a for i, a in enumerate(training_set.raw("validation")))
    if len(X_tr) < MIN_TRAIN_WINDOWS:
        raise ValueError(
            f"too few train windows to train a GRU: {len(X_tr)} < {MIN_TRAIN_WINDOWS} "
            f"(lookback {training_set.lookback}, horizon {training_set.horizon}, counts {training_set.counts()})"
        )
    if len(X_va):
        return X_tr, y_tr, X_va, y_va, "validation"
    n_val = max(1, round(len(X_tr) * FALLBACK_VALIDATION_FRACTION))
    # Windows are in time order, so the tail is the most recent stretch: the closest stand-in for
    # unseen future data. (Its first windows overlap the last train windows' targets; acceptable
    # for choosing an epoch, and said in the history.)
    return X_tr[:-n_val], y_tr[:-n_val], X_tr[-n_val:], y_tr[-n_val:], "last 10 % of train (no validation windows)"


def train_gru(training_set: TrainingSet, config: GRUConfig | None = None, init: TrainedGRU | None = None) -> TrainedGRU:
    """Train on the train part with Adam + MSE, early-stop on validation loss, keep the best epoch's weights.

    With `init` (a trained GRU of the same shape) it is a fine-tune: training starts from its weights and
    keeps its scaler, so what the network learned from a long history (the daily cycle, the weather's
    persistence) carries over and the few windows of a new regime only have to teach what changed -
    how a drift retrain learns a heatwave from a few days of it. Raises ValueError when there are fewer
    than MIN_TRAIN_WINDOWS train windows (the caller turns that into a skip reason rather than a failed
    run) or when `init` does not fit the set's window shape.
    """
    import torch

    config = config or GRUConfig()
    if init is not None and (init.lookback, init.horizon) != (training_set.lookback, training_set.horizon):
        raise ValueError(f"cannot fine-tune a GRU of lookback {init.lookback}, horizon {init.horizon} on windows "
                         f"of lookback {training_set.lookback}, horizon {training_set.horizon}")
    if init is not None:
        config = replace(config, hidden=init.config.hidden, layers=init.config.layers)
    scaler = None if init is None else (init.mean, init.std)
    X_tr, y_tr, X_va, y_va, validation_source = _split_for_training(training_set, scaler)

    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        net = _network(training_set.lookback, training_set.horizon, config.hidden, config.layers)
        if init is not None:
            net.load_state_dict(init.state_dict)
        optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
        loss_fn = torch.nn.MSELoss()
        xt = torch.from_numpy(X_tr.astype(np.float32))
        yt = torch.from_numpy(y_tr.astype(np.float32))
        xv = torch.from_numpy(X_va.astype(np.float32))
        yv = torch.from_numpy(y_va.astype(np.float32))

        history: list[dict[str, float]] = []
        best_loss = float("inf")
        best_state = copy.deepcopy(net.state_dict())
        best_epoch = 0
        since_best = 0
        stop_reason = "epochs"
        if init is not None:  # epoch 0: the fine-tune keeps the starting weights unless an epoch does better
            net.eval()
            with torch.inference_mode():
                best_loss = float(loss_fn(net(xv), yv))
        started = time.perf_counter()
        for epoch in range(1, config.epochs + 1):
            net.train()
            order = torch.randperm(len(xt), generator=generator)
            total = 0.0
            for batch in torch.split(order, config.batch_size):
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(net(xt[batch]), yt[batch])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            net.eval()
            with torch.inference_mode():
                val_loss = float(loss_fn(net(xv), yv))
            elapsed = time.perf_counter() - started
            history.append(
                {"epoch": epoch, "train_loss": total / len(xt), "val_loss": val_loss, "seconds": round(elapsed, 3)}
            )
            if val_loss < best_loss:
                best_loss, best_epoch, since_best = val_loss, epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                since_best += 1
            if since_best >= config.patience:
                stop_reason = "patience"
                break
            if config.max_seconds is not None and elapsed >= config.max_seconds and epoch < config.epochs:
                stop_reason = "max_seconds"
                break
        train_seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)

    return TrainedGRU(
        state_dict=best_state,
        config=config,
        lookback=training_set.lookback,
        horizon=training_set.horizon,
        mean=training_set.mean if init is None else init.mean,
        std=training_set.std if init is None else init.std,
        history=history,
        best_epoch=best_epoch,
        train_seconds=train_seconds,
        stopped_early=stop_reason != "epochs",
        stop_reason=stop_reason,
        validation_source=validation_source,
        n_train=len(xt),
        n_val=len(xv),
    )


def bench_gru_training(days: float = 365, seed: int = 0, config: GRUConfig | None = None) -> dict[str, Any]:
    """Train the default GRU on `days` of one simulated calm station (lookback 24, horizon 1) and score it.

    Returns gru_train_seconds, the test RMSE of the GRU and of both baselines, and the training
    story (epochs run, best epoch, stop reason), for `aero bench forecast` and docs/BENCHMARKS.md.
    """
    from aero_assets.forecast.bench_run import bench_run

    run = bench_run(days, seed, lambda training_set: train_gru(training_set, config))
    model = run.model
    return {
        "days": days,
        "gru_train_seconds": round(model.train_seconds, 2),
        "gru_rmse": run.rmse(model.predict(run.X_test)),
        "persistence_rmse": run.persistence_rmse,
        "seasonal_naive_rmse": run.seasonal_naive_rmse,
        "epochs_run": len(model.history),
        "best_epoch": model.best_epoch,
        "stop_reason": model.stop_reason,
        "windows": run.training_set.counts(),
    }
