"""Render a training run's curves from its `metrics.csv` to a PNG (matplotlib, Agg backend)."""

from __future__ import annotations

import logging
from pathlib import Path

from robota.errors import MissingExtraError, RobotaError
from robota.train_metrics import read_metrics
from robota.train_state import METRICS_FILE, PLOT_FILE

logger = logging.getLogger(__name__)
_TIMING = ("data_s", "update_s")
_NOT_LOSS = {"epoch", "lr", "grad_norm", "step_s", "samples_per_s", "data_share", *_TIMING}


def plot_run(run: str | Path, output: str | Path | None = None) -> Path:
    """Draw loss terms, validation loss, learning rate, gradient norm, timing and success rate.

    Args:
        run: Run folder that training wrote (it contains `metrics.csv`).
        output: PNG path; defaults to `RUN/curves.png`.

    Returns:
        The PNG path.

    Raises:
        RobotaError: The run folder has no `metrics.csv` or no rows.
        MissingExtraError: matplotlib is not installed.
    """
    run = Path(run)
    path = run / METRICS_FILE
    if not path.is_file():
        raise RobotaError(f"{path} not found; pass the run folder (TrainConfig.output) of a training run")
    series = read_metrics(path)
    if not series:
        raise RobotaError(f"{path} has no metric rows yet; plot again after the first log step")
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise MissingExtraError("matplotlib", "train") from None

    panels = _panels(series)
    figure, axes = pyplot.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), sharex=True, squeeze=False)
    for axis, (title, keys, log_scale) in zip(axes[:, 0], panels):
        for key in keys:
            steps, values = zip(*series[key])
            axis.plot(steps, values, label=key, marker="o" if len(steps) < 3 else None)
        axis.set_title(title)
        if log_scale:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend(loc="best", fontsize="small")
    axes[-1, 0].set_xlabel("step")
    figure.tight_layout()
    target = Path(output) if output is not None else run / PLOT_FILE
    figure.savefig(target, dpi=100)
    pyplot.close(figure)
    logger.info("wrote %s", target)
    return target


def _panels(series: dict) -> list[tuple[str, list[str], bool]]:
    """Return (title, columns, log scale) of each panel that has data."""
    losses = [key for key in series if key not in _NOT_LOSS and not key.startswith("eval_")]
    candidates = [
        ("loss", losses, all(v > 0 for key in losses for _, v in series[key])),
        ("learning rate", ["lr"], False),
        ("gradient norm (before clipping)", ["grad_norm"], False),
        ("seconds per step", list(_TIMING), False),
        ("samples per second", ["samples_per_s"], False),
        ("twin success rate", ["eval_success_rate"], False),
    ]
    return [(title, [k for k in keys if k in series], log) for title, keys, log in candidates if any(k in series for k in keys)]
