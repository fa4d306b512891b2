"""Tiny site datasets, an in-process transport and Flower process helpers for federation tests."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from robota.datasets.synthetic import write_random_dataset
from robota.federated import FederationConfig
from robota.federated_rounds import SiteReply, open_site_dataset, site_info, site_round
from robota.spec import UR5E, make_arm_spec

TINY_ACT = {"dim_model": 32, "n_heads": 2, "dim_feedforward": 64, "image_channels": [8, 16], "dropout": 0.0}


def write_site_dataset(root: Path, seed: int, episodes: int = 3, length: int = 10, image_size: int = 16) -> Path:
    """Record `episodes` episodes of random square frames and vectors with DatasetWriter."""
    spec = make_arm_spec(UR5E, 10, {"wrist": (image_size, image_size)})
    return write_random_dataset(root, spec, episodes=episodes, length=length, seed=seed)


def tiny_config(output: Path, **changes: Any) -> FederationConfig:
    """A federation of the tiny ACT policy that trains a few steps per round."""
    settings: dict[str, Any] = dict(
        output=output,
        rounds=2,
        local_steps=2,
        chunk_size=4,
        batch_size=8,
        lr=1e-3,
        policy_overrides=TINY_ACT,
        min_sites=2,
        wait_timeout_s=5,
        round_timeout_s=30,
    )
    settings.update(changes)
    return FederationConfig(**settings)


@dataclasses.dataclass
class LocalSite:
    """A site served in this process: its dataset, an injected fault, the round it goes silent."""

    data: Path
    fault: str | None = None
    silent_from_round: int | None = None


class LocalTransport:
    """The coordinator's transport with every site in this process, for fast tests."""

    def __init__(self, sites: Mapping[int, LocalSite]):
        self.sites = dict(sites)

    def node_ids(self) -> list[int]:
        return sorted(self.sites)

    def query(self, nodes: list[int], timeout_s: float) -> dict[int, dict[str, Any]]:
        answers = {}
        for node in nodes:
            # A JSON round trip, as the Flower transport does.
            answers[node] = json.loads(json.dumps(site_info(open_site_dataset(self.sites[node].data, 1))))
        return answers

    def train(
        self, nodes: list[int], state: Mapping[str, torch.Tensor], settings: dict[str, Any],
        stats: dict[str, Any], timeout_s: float,
    ) -> dict[int, SiteReply]:
        replies = {}
        for node in nodes:
            site = self.sites[node]
            if site.silent_from_round is not None and settings["round"] >= site.silent_from_round:
                continue
            dataset = open_site_dataset(site.data, settings["chunk_size"])
            replies[node] = site_round(dataset, dict(state), stats, settings, fault=site.fault)
        return replies
