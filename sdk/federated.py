"""Federated training across sites on Flower's Deployment Engine, as real processes.

The coordinator runs a Flower SuperLink and submits robota's ServerApp (`robota.federated_app`)
with `flwr run`. Each site runs a SuperNode whose dataset path is node configuration, read by the
ClientApp on the site's machine and never sent. Only the spec, dataset statistics, sample counts,
dataset fingerprints and weight updates travel.

```python
from robota.federated import FederationConfig, train_federated_local

checkpoint = train_federated_local(["site-a/data", "site-b/data"], FederationConfig(output="fed"))
```

Every Flower process is started with telemetry, update checks and runtime dependency installation
turned off, a private `FLWR_HOME`, and loopback addresses unless the caller names another host.
Flower's Simulation Engine (Ray) is never used. Every wait has a deadline, and every process is
stopped by its PID.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robota.datasets.stats import pool_stats
from robota.errors import RobotaError
from robota.federated_strategy import COMPRESSIONS, AggregationConfig

logger = logging.getLogger(__name__)

__all__ = [
    "FederationConfig",
    "FederationError",
    "pool_stats",
    "train_federated_local",
]

LOOPBACK = "127.0.0.1"
CONNECTION_NAME = "robota"
APP_CONFIG_KEY = "robota-config"
# Settings that keep Flower's processes from contacting anything but the SuperLink.
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


class FederationError(RobotaError):
    """A federated run could not start or finish: missing sites, a failed round, a dead process."""


@dataclasses.dataclass
class FederationConfig:
    """Settings of a federated run, sent to the ServerApp as one JSON run-config entry.

    Attributes:
        output: Folder of the run: `global/` (a robota checkpoint, replaced after every round)
            and `rounds.json` (sites, acceptances and bytes per round).
        rounds: Federated rounds.
        local_steps: Optimiser steps each site runs per round (H).
        strategy: `fedavg`, `fedprox` or `diloco`.
        min_sites: Sites that must be connected before the first round.
        quorum: Accepted updates a round needs; 0 means `min_sites`.
        wait_timeout_s: Deadline for `min_sites` sites to connect.
        round_timeout_s: Deadline of each round's replies (and of the setup query).
        compression: `none`, `fp16` or `int8` (per-tensor scale) for the site updates.
        aggregation: `mean`, `trimmed-mean` or `median`.
        trim_fraction: Fraction cut at each end by `trimmed-mean`.
        reject_nonfinite: Reject updates with NaN or Inf. Turn off only for a control run.
        max_norm_ratio: Reject updates whose norm exceeds this multiple of the round's median
            norm (with 3 or more updates); 0 turns it off.
        outer_lr: Outer learning rate; DiLoCo's paper uses 0.7, FedAvg is 1.0.
        outer_momentum: DiLoCo's Nesterov momentum; 0.9 in the DiLoCo paper.
        proximal_mu: FedProx's proximal coefficient μ; used with `fedprox` only.
        policy: Registered policy name.
        policy_overrides: Fields of the policy config to change.
        chunk_size: Action chunk length.
        batch_size: Site batch size.
        lr: Site (inner) AdamW learning rate.
        weight_decay: Site AdamW weight decay.
        grad_clip_norm: Site gradient clipping norm.
        seed: Seed of the initial global weights and of the sites' data order.
    """

    output: Path = Path("federated-run")
    rounds: int = 3
    local_steps: int = 20
    strategy: str = "fedavg"
    min_sites: int = 2
    quorum: int = 0
    wait_timeout_s: float = 120.0
    round_timeout_s: float = 600.0
    compression: str = "none"
    aggregation: str = "mean"
    trim_fraction: float = 0.2
    reject_nonfinite: bool = True
    max_norm_ratio: float = 10.0
    outer_lr: float = 1.0
    outer_momentum: float = 0.0
    proximal_mu: float = 0.01
    policy: str = "act"
    policy_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    chunk_size: int = 10
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip_norm: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        for name in ("rounds", "local_steps", "min_sites", "chunk_size", "batch_size"):
            if getattr(self, name) < 1:
                raise FederationError(f"FederationConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.quorum < 0:
            raise FederationError(f"FederationConfig.quorum must be 0 (= min_sites) or positive, got {self.quorum}")
        if self.quorum == 0:
            self.quorum = self.min_sites
        for name in ("wait_timeout_s", "round_timeout_s", "lr"):
            if getattr(self, name) <= 0:
                raise FederationError(f"FederationConfig.{name} must be positive, got {getattr(self, name)}")
        if self.compression not in COMPRESSIONS:
            raise FederationError(f"FederationConfig.compression {self.compression!r} is not one of {COMPRESSIONS}")
        self.aggregation_config()  # Validates strategy, aggregation and the outer step.

    def aggregation_config(self) -> AggregationConfig:
        """Return the coordinator's aggregation settings."""
        return AggregationConfig(
            strategy=self.strategy,
            outer_lr=self.outer_lr,
            outer_momentum=self.outer_momentum,
            aggregation=self.aggregation,
            trim_fraction=self.trim_fraction,
            reject_nonfinite=self.reject_nonfinite,
            max_norm_ratio=self.max_norm_ratio,
        )

    def site_settings(self, round_index: int) -> dict[str, Any]:
        """Return what a site needs to train one round; the seed differs per round."""
        return {
            "round": round_index,
            "local_steps": self.local_steps,
            "compression": self.compression,
            "proximal_mu": self.proximal_mu if self.strategy == "fedprox" else 0.0,
            "policy": self.policy,
            "policy_overrides": self.policy_overrides,
            "chunk_size": self.chunk_size,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "grad_clip_norm": self.grad_clip_norm,
            "seed": self.seed + round_index,
        }

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as JSON types."""
        values = dataclasses.asdict(self)
        values["output"] = str(self.output)
        return values

    def to_json(self) -> str:
        """Return the settings as one JSON string."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> FederationConfig:
        """Build the settings from `to_json`'s output."""
        return cls(**json.loads(text))


def train_federated_local(
    dataset_dirs: Sequence[str | Path],
    config: FederationConfig,
    *,
    workdir: str | Path | None = None,
    run_timeout_s: float = 1800.0,
) -> Path:
    """Run a federation on this machine: a SuperLink and one SuperNode per dataset, on loopback.

    This is what `robota demo --sites N` calls. Each dataset is one site's data, passed to its
    SuperNode as node config.

    Args:
        dataset_dirs: One dataset folder per site.
        config: The run's settings; `min_sites` is raised to the number of datasets if lower.
        workdir: Folder for Flower's home, the app and the process logs; a temporary one if None.
        run_timeout_s: Deadline of the whole run.

    Returns:
        The global checkpoint folder, `config.output / "global"`.

    Raises:
        FederationError: A process failed to start, a round failed, or the run timed out.
    """
    if not dataset_dirs:
        raise FederationError("train_federated_local needs at least one dataset folder, got none")
    from robota.federated_processes import FlowerProcesses

    config = dataclasses.replace(config, output=Path(config.output).resolve())
    with tempfile.TemporaryDirectory(prefix="robota-federated-") as scratch:
        folder = Path(workdir) if workdir is not None else Path(scratch)
        with FlowerProcesses(folder) as processes:
            port = processes.start_superlink()
            for index, data in enumerate(dataset_dirs):
                processes.start_site(f"site-{index}", data, f"{LOOPBACK}:{port}")
            processes.run_app(config, run_timeout_s)
    return config.output / "global"
