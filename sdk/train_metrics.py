"""Training curves: `metrics.csv` in the run folder and TensorBoard event files.

Each row of `metrics.csv` is one report at a step. Training rows carry the loss terms, `lr`,
`grad_norm`, `step_s`, `samples_per_s`, `data_s`, `update_s` and `data_share`, averaged over the
steps since the previous row. `data_s` is the time per step spent waiting for data, `update_s`
the time of the forward and backward passes and the optimiser step, and `data_share` is
`data_s / step_s`. Validation rows
carry `val_loss`, rollout rows `eval_success_rate`; their other cells are empty.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path

from robota.train_state import METRICS_FILE, TENSORBOARD_DIR, write_text_atomic

logger = logging.getLogger(__name__)


class MetricsWriter:
    """Appends metric rows to `metrics.csv` and, if asked, TensorBoard event files.

    Args:
        output: Run folder.
        tensorboard: Whether to write event files under `tensorboard/`.
        start_step: Steps already done; rows after it from an interrupted run are dropped.
    """

    def __init__(self, output: Path, *, tensorboard: bool, start_step: int = 0):
        self.path = output / METRICS_FILE
        self._columns: list[str] = []
        self._rows: list[dict[str, str]] = []
        if self.path.is_file():
            self._read_earlier_rows(start_step)
        self._tensorboard = _open_tensorboard(output, start_step) if tensorboard else None

    def _read_earlier_rows(self, start_step: int) -> None:
        with self.path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            self._columns = list(reader.fieldnames or [])
            self._rows = [row for row in reader if int(float(row["step"])) <= start_step]
        self._rewrite()

    def write(self, step: int, values: Mapping[str, float]) -> None:
        """Add one row at `step` and flush it to disk."""
        new_columns = [key for key in values if key not in self._columns]
        row = {"step": str(step), **{key: repr(float(value)) for key, value in values.items()}}
        self._rows.append(row)
        if new_columns or not self._columns:
            self._columns = ["step", *[c for c in self._columns if c != "step"], *new_columns]
            self._rewrite()
        else:
            with self.path.open("a", newline="", encoding="utf-8") as file:
                csv.DictWriter(file, self._columns).writerow(row)
        if self._tensorboard is not None:
            for key, value in values.items():
                self._tensorboard.add_scalar(_tensorboard_tag(key), float(value), step)
            self._tensorboard.flush()

    def _rewrite(self) -> None:
        lines = _csv_text(self._columns, self._rows)
        write_text_atomic(self.path, lines)

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self._tensorboard is not None:
            self._tensorboard.close()


def _csv_text(columns: list[str], rows: list[dict[str, str]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _tensorboard_tag(key: str) -> str:
    if key.startswith("val_"):
        return f"val/{key[4:]}"
    if key.startswith("eval_"):
        return f"eval/{key[5:]}"
    if key in ("data_s", "update_s", "step_s", "samples_per_s", "data_share"):
        return f"perf/{key}"
    return f"train/{key}"


def _open_tensorboard(output: Path, start_step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning(
            "tensorboard is not installed, so no event files are written (metrics.csv still "
            "is); install it with: pip install 'robota[train]', or set tensorboard = false"
        )
        return None
    # purge_step hides events of an interrupted run past the resumed step.
    return SummaryWriter(str(output / TENSORBOARD_DIR), purge_step=start_step + 1 if start_step else None)


def read_metrics(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Read `metrics.csv` as `{column: [(step, value), ...]}`, skipping empty cells."""
    series: dict[str, list[tuple[int, float]]] = {}
    with Path(path).open(newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            step = int(float(row["step"]))
            for key, text in row.items():
                if key != "step" and text not in ("", None):
                    series.setdefault(key, []).append((step, float(text)))
    return series
