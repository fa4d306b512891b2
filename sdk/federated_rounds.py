"""The rounds of a federated run, independent of the transport that carries the messages.

`run_federation(transport, config)` is the coordinator: it goes through these phases.

1. Wait, up to `wait_timeout_s`, until `min_sites` sites are connected.
2. Ask every site for its feature spec, dataset statistics and sample count, check that the specs
   agree and pool the statistics, so the global policy normalises every site's data the same way.
   A site's data path stays in its own node config and is never sent.
3. For each round, send the global weights, let each site train `local_steps` steps with robota's
   policy loss and AdamW (`train_site`), receive its compressed pseudo-gradient, screen, combine
   and apply it (`robota.federated_strategy`), and save the global model as a robota checkpoint.

A round waits at most `round_timeout_s`. Sites that send no reply in time are dropped from later
rounds, and a round with fewer than `quorum` accepted updates ends the run with a `FederationError`.

The Flower transport lives in `robota.federated_app`; tests drive the same code with an
in-process transport.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from robota.federated import FederationConfig, FederationError, pool_stats
from robota.federated_strategy import (
    OuterOptimizer,
    SiteUpdate,
    combine_updates,
    compress,
    decompress,
    make_outer_optimizer,
    payload_bytes,
    screen_updates,
)

logger = logging.getLogger(__name__)

_POLL_S = 1.0


@dataclasses.dataclass(frozen=True)
class SiteReply:
    """A site's reply to a training round, as it travels.

    Attributes:
        payload: Compressed pseudo-gradient per trainable tensor.
        scales: Per-tensor int8 scales (empty unless int8).
        num_samples: Samples of the site's dataset.
        sent_bytes: Bytes of `payload` and `scales`.
        loss: Mean training loss over the local steps.
    """

    payload: dict[str, np.ndarray]
    scales: dict[str, np.ndarray]
    num_samples: int
    sent_bytes: int
    loss: float


class Transport(Protocol):
    """The coordinator's view of the network: list the sites, query them, train them."""

    def node_ids(self) -> list[int]:
        """Return the ids of the connected sites."""

    def query(self, nodes: list[int], timeout_s: float) -> dict[int, dict[str, Any]]:
        """Return the `site_info` of each site that replied within `timeout_s`, by node id."""

    def train(
        self, nodes: list[int], state: Mapping[str, torch.Tensor], settings: dict[str, Any],
        stats: dict[str, Any], timeout_s: float,
    ) -> dict[int, SiteReply]:
        """Return the round's reply of each site that replied within `timeout_s`, by node id."""


# Coordinator ---------------------------------------------------------------------------------


def run_federation(transport: Transport, config: FederationConfig) -> Path:
    """Run every round and return the folder of the global checkpoint.

    Raises:
        FederationError: Too few sites connected in time, the sites' specs disagree, or a round
            ended with fewer accepted updates than the quorum.
    """
    nodes = wait_for_sites(transport, config.min_sites, config.wait_timeout_s)
    infos = _query_sites(transport, nodes, config)
    nodes = sorted(infos)
    policy = _build_global_policy(infos, config)
    fingerprints = sorted(str(info.get("fingerprint")) for info in infos.values())
    trainable = [name for name, _ in policy.named_parameters()]
    aggregation = config.aggregation_config()
    outer = make_outer_optimizer(aggregation)
    stats = _to_json(policy.stats)
    history: list[dict[str, Any]] = []

    for round_index in range(1, config.rounds + 1):
        started = time.monotonic()
        replies = transport.train(
            nodes, policy.state_dict(), config.site_settings(round_index), stats, config.round_timeout_s
        )
        _log_missing(f"round {round_index}", nodes, replies, config.round_timeout_s)
        nodes = sorted(replies)
        updates = [_to_update(node, reply) for node, reply in sorted(replies.items())]
        accepted = screen_updates(updates, trainable, aggregation)
        if len(accepted) < config.quorum:
            raise FederationError(
                f"round {round_index}: {len(accepted)} accepted update(s) of {len(updates)} "
                f"received, below the quorum of {config.quorum}; check the sites' logs, or lower "
                "--quorum to continue with fewer sites"
            )

        apply_outer_step(policy, combine_updates(accepted, aggregation), outer)
        history.append(_round_record(round_index, updates, accepted, time.monotonic() - started))
        checkpoint = _save_global(policy, config, history, fingerprints)
        logger.info(
            "round %d/%d: %d of %d update(s) accepted, %d bytes received; saved %s",
            round_index, config.rounds, len(accepted), len(updates),
            history[-1]["bytes_received"], checkpoint,
        )
    return config.output / "global"


def wait_for_sites(transport: Transport, min_sites: int, timeout_s: float) -> list[int]:
    """Poll until `min_sites` sites are connected and return their node ids.

    Raises:
        FederationError: Fewer sites connected within `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    nodes: list[int] = []
    while True:
        nodes = sorted(transport.node_ids())
        if len(nodes) >= min_sites:
            logger.info("%d site(s) connected: node ids %s", len(nodes), nodes)
            return nodes
        if time.monotonic() >= deadline:
            break
        time.sleep(_POLL_S)
    raise FederationError(
        f"{len(nodes)} site(s) connected within {timeout_s:.0f} s, but --min-sites is {min_sites}; "
        "start more sites with `robota federate site` or raise --wait-timeout-s"
    )


def _query_sites(transport: Transport, nodes: list[int], config: FederationConfig) -> dict[int, dict[str, Any]]:
    """Ask the sites for spec, statistics, sample count and fingerprint; check the specs agree."""
    infos = transport.query(nodes, config.round_timeout_s)
    _log_missing("setup query", nodes, infos, config.round_timeout_s)
    if len(infos) < config.quorum:
        raise FederationError(
            f"{len(infos)} of {len(nodes)} site(s) replied to the setup query within "
            f"{config.round_timeout_s:.0f} s, below the quorum of {config.quorum}; check the "
            "sites' data paths and logs"
        )

    specs = {json.dumps(info["spec"], sort_keys=True) for info in infos.values()}
    if len(specs) > 1:
        raise FederationError(
            f"the sites' datasets have {len(specs)} different feature specs (node ids "
            f"{sorted(infos)}); record every site with the same robot, cameras and image size"
        )
    return infos


def _build_global_policy(infos: Mapping[int, dict[str, Any]], config: FederationConfig) -> torch.nn.Module:
    """Build the seeded initial global policy with the sites' pooled statistics."""
    from robota.policies.registry import make_policy
    from robota.spec import Spec

    first = next(iter(infos.values()))
    stats = pool_stats([(info["stats"], info["num_samples"]) for info in infos.values()])
    torch.manual_seed(config.seed)
    policy = make_policy(
        config.policy, Spec.from_dict(first["spec"]), stats,
        chunk_size=config.chunk_size, **config.policy_overrides,
    )
    return policy


def apply_outer_step(policy: torch.nn.Module, gradient: Mapping[str, np.ndarray], outer: OuterOptimizer) -> None:
    """Update the policy's parameters in place with one outer step on `gradient`."""
    weights = {name: p.detach().cpu().numpy() for name, p in policy.named_parameters()}
    updated = outer.step(weights, gradient)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            parameter.copy_(torch.from_numpy(updated[name]))


def _log_missing(stage: str, nodes: list[int], replies: Mapping[int, Any], timeout_s: float) -> None:
    for node in sorted(set(nodes) - set(replies)):
        logger.warning(
            "%s: node %d sent no valid reply within %.0f s; it is dropped from later rounds",
            stage, node, timeout_s,
        )


def _to_update(node: int, reply: SiteReply) -> SiteUpdate:
    return SiteUpdate(
        node_id=node,
        delta=decompress(reply.payload, reply.scales),
        num_samples=reply.num_samples,
        sent_bytes=reply.sent_bytes,
    )


def _round_record(
    round_index: int, updates: list[SiteUpdate], accepted: list[SiteUpdate], duration_s: float
) -> dict[str, Any]:
    return {
        "round": round_index,
        "duration_s": round(duration_s, 3),
        "received_from": [u.node_id for u in updates],
        "accepted_from": [u.node_id for u in accepted],
        "bytes_per_site": {str(u.node_id): u.sent_bytes for u in updates},
        "bytes_received": sum(u.sent_bytes for u in updates),
    }


def _save_global(
    policy: torch.nn.Module, config: FederationConfig, history: list[dict[str, Any]], site_fingerprints: list[str]
) -> Path:
    from robota.policies.checkpoint import save_checkpoint

    # One fingerprint for the union of the sites' datasets, as `robota export` reads it.
    extra = {
        "dataset_fingerprint": hashlib.sha256("\n".join(site_fingerprints).encode()).hexdigest(),
        "federation": {"config": config.to_dict(), "rounds": history, "site_fingerprints": site_fingerprints},
    }
    folder = save_checkpoint(config.output / "global", policy, extra=extra)
    (config.output / "rounds.json").write_text(json.dumps(history, indent=2), encoding="utf-8")
    return folder


def _to_json(value: Any) -> Any:
    """Convert numpy values in nested statistics to JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


# Site ----------------------------------------------------------------------------------------


def site_info(dataset: Any) -> dict[str, Any]:
    """Return the setup reply of a site: spec, statistics, sample count and content fingerprint."""
    return {
        "spec": dataset.spec.to_dict(),
        "stats": _to_json(dataset.stats),
        "num_samples": len(dataset),
        "fingerprint": getattr(dataset, "fingerprint", None),
    }


def site_round(
    dataset: Any, state: Mapping[str, torch.Tensor], stats: dict[str, Any], settings: dict[str, Any],
    *, fault: str | None = None,
) -> SiteReply:
    """Train one round at a site and return its compressed reply.

    Args:
        dataset: The site's `ChunkDataset`.
        state: Global policy state dict.
        stats: Pooled statistics the global policy was built with.
        settings: `FederationConfig.site_settings` of the round.
        fault: `nan` replaces the update by NaN, to exercise the coordinator's screening.
    """
    delta, loss = train_site(dataset, state, stats, settings)
    if fault == "nan":
        delta = {name: np.full_like(tensor, np.nan) for name, tensor in delta.items()}
    payload, scales = compress(delta, settings["compression"])
    sent_bytes = payload_bytes(payload, scales)
    logger.info(
        "round %d: trained %d local steps, loss %.4f, sending %d bytes (%s)",
        settings["round"], settings["local_steps"], loss, sent_bytes, settings["compression"],
    )
    return SiteReply(payload, scales, len(dataset), sent_bytes, loss)


def train_site(
    dataset: Any, state: Mapping[str, torch.Tensor], stats: dict[str, Any], settings: dict[str, Any]
) -> tuple[dict[str, np.ndarray], float]:
    """Train a copy of the global policy on the site's data and return its pseudo-gradient.

    The inner optimiser is AdamW on the policy's own training loss (its `forward`), with gradient
    clipping as in `robota.train`. With `proximal_mu` above 0 (FedProx) the loss adds
    `mu / 2 * ||w - w_global||^2`.

    Returns:
        `global - local` per trainable tensor, and the mean loss over the local steps.
    """
    from robota.policies.registry import make_policy
    from robota.train_dist import DistributedContext
    from robota.train_loop import BatchStream

    torch.manual_seed(settings["seed"])
    policy = make_policy(
        settings["policy"], dataset.spec, stats,
        chunk_size=settings["chunk_size"], **settings["policy_overrides"],
    )
    policy.load_state_dict(state)
    policy.train()
    anchor = {name: p.detach().clone() for name, p in policy.named_parameters()}
    optimizer = torch.optim.AdamW(policy.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    context = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), owns_group=False)
    stream = BatchStream(dataset, context, _StreamSettings(settings))

    losses = []
    for _ in range(settings["local_steps"]):
        loss = policy(stream.next())["loss"]
        if settings["proximal_mu"] > 0:
            drift = sum(torch.sum((p - anchor[name]) ** 2) for name, p in policy.named_parameters())
            loss = loss + settings["proximal_mu"] / 2 * drift
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), settings["grad_clip_norm"])
        optimizer.step()
        losses.append(float(loss.detach()))

    delta = {name: (anchor[name] - p.detach()).numpy() for name, p in policy.named_parameters()}
    return delta, float(np.mean(losses))


class _StreamSettings:
    """The fields of a training config that `BatchStream` reads."""

    def __init__(self, settings: dict[str, Any]):
        self.batch_size = settings["batch_size"]
        self.seed = settings["seed"]
        self.num_workers = 0
        self.dataset = "the site dataset"


def open_site_dataset(path: str | Path, chunk_size: int) -> Any:
    """Open a site's dataset as training chunks."""
    from robota.datasets.torch_loader import ChunkDataset

    return ChunkDataset(str(path), chunk_size=chunk_size)
