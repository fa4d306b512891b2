"""The data and the initial policy of a training run: one dataset or a weighted mix.

With several datasets (`TrainConfig.dataset` a list), `build_datasets` opens each as a
`ChunkDataset` and joins them in a `ChunkMixture`. Its batches draw dataset d with probability
`w_d`, and its normalisation statistics are pooled over the union of each robot's data. The
feature specs must be equal for datasets of one robot. Datasets of several robots may differ in
the robot and its joint-indexed features. Every batch then contains one robot, and the policy
(only `flow` can) gets each robot's spec and statistics as an embodiment. With `val_fraction`,
each dataset's last episodes are held out, and the validation loss averages over all held-out
samples without weighting.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from robota.errors import SpecError, check_choice
from robota.train_config import DatasetSource, TrainConfig

logger = logging.getLogger(__name__)


def build_datasets(config: Any, factory: Callable[[Any], Dataset] | None) -> tuple[Dataset, Dataset | None]:
    """Build the training samples and, with `val_fraction`, the held-out validation samples."""
    if factory is not None:
        return split_tail(factory(config), config.val_fraction)
    from robota.datasets.torch_loader import ChunkMixture

    sources = config.dataset_sources
    splits = [_split_dataset(source.path, config) for source in sources]
    if len(splits) == 1:
        return splits[0]

    weights = mixture_weights(sources, config.dataset_weighting)
    train_set = ChunkMixture(
        [train for train, _ in splits], weights, names=[str(source.path) for source in sources]
    )
    val_set = None
    if config.val_fraction:
        # A ChunkMixture rather than a ConcatDataset, so validation can batch one robot at a time.
        val_set = ChunkMixture([val for _, val in splits], names=train_set.names)
    logger.info(
        "training on a mix of %d datasets: %s",
        len(sources),
        ", ".join(f"{name} ({weight:.1%})" for name, weight in zip(train_set.names, train_set.weights)),
    )
    return train_set, val_set


def mixture_weights(sources: Sequence[DatasetSource], weighting: str) -> list[float] | None:
    """Return the sampling weights of mixed datasets, or None to weigh them by their samples.

    Without any written weight, `weighting` decides: `frames` (None) or `equal`. Where some
    entries have a weight, the others weigh 1.
    """
    if all(source.weight is None for source in sources):
        return None if weighting == "frames" else [1.0] * len(sources)
    return [1.0 if source.weight is None else source.weight for source in sources]


def _split_dataset(root: Path, config: Any) -> tuple[Dataset, Dataset | None]:
    from robota.datasets import open_dataset
    from robota.datasets.torch_loader import ChunkDataset

    if config.val_fraction == 0:
        return ChunkDataset(root, chunk_size=config.chunk_size), None
    episodes = open_dataset(root).num_episodes
    held_out = max(1, round(episodes * config.val_fraction))
    if held_out >= episodes:
        raise SpecError(
            f"val_fraction {config.val_fraction} holds out all {episodes} episodes of "
            f"{root}; lower it or record more episodes"
        )
    train_set = ChunkDataset(root, chunk_size=config.chunk_size, episodes=range(episodes - held_out))
    val_set = ChunkDataset(
        root, chunk_size=config.chunk_size, episodes=range(episodes - held_out, episodes)
    )
    return train_set, val_set


def split_tail(dataset: Dataset, fraction: float) -> tuple[Dataset, Dataset | None]:
    """Hold out the last `fraction` of a factory's samples, keeping its attributes on the rest."""
    if fraction == 0:
        return dataset, None
    held_out = max(1, round(len(dataset) * fraction))
    train_set = Subset(dataset, range(len(dataset) - held_out))
    for attribute in ("spec", "stats", "fingerprint"):
        setattr(train_set, attribute, getattr(dataset, attribute, None))
    return train_set, Subset(dataset, range(len(dataset) - held_out, len(dataset)))


def build_policy(config: TrainConfig, dataset: Dataset) -> torch.nn.Module:
    """Build a fresh policy from the dataset's spec and statistics, or load `init_from`.

    A mix of several robots builds the policy for its primary (first) robot, with the other
    robots' specs and statistics as `embodiments`.

    Raises:
        SpecError: The dataset lacks a spec or statistics, or mixes robots for a policy that
            drives one robot only.
    """
    from robota.policies.registry import POLICIES, make_config, make_policy

    for attribute in ("spec", "stats"):
        if getattr(dataset, attribute, None) is None:
            raise SpecError(
                f"training dataset {type(dataset).__name__} at {config.dataset} has no "
                f"{attribute}; train on a dataset written by robota, which records both"
            )
    if config.init_from is not None:
        from robota.finetune import build_finetune_policy

        return build_finetune_policy(config, dataset)
    others = other_embodiments(config, dataset)
    if not others:
        return make_policy(
            config.policy,
            dataset.spec,
            dataset.stats,
            chunk_size=config.chunk_size,
            **config.policy_overrides,
        )
    policy_config = make_config(config.policy, chunk_size=config.chunk_size, **config.policy_overrides)
    return POLICIES[config.policy](policy_config, dataset.spec, dataset.stats, embodiments=others)


def other_embodiments(config: TrainConfig, dataset: Any) -> dict[str, tuple[Any, Any]]:
    """Return the robots of a mix other than its primary one, name to `(spec, stats)`.

    Raises:
        SpecError: The mix has several robots but `config.policy` drives one robot only; the
            message names a dataset of each of two robots.
    """
    from robota.policies.registry import POLICIES

    embodiments = dict(getattr(dataset, "embodiments", None) or {})
    if len(embodiments) < 2:
        return {}
    policy_class = POLICIES[check_choice("policy", config.policy, POLICIES)]
    if not getattr(policy_class, "multi_robot", False):
        robots = list(embodiments)
        first = dataset.names[dataset.part_robots.index(robots[0])]
        other = dataset.names[dataset.part_robots.index(robots[1])]
        raise SpecError(
            f"{first} (robot {robots[0]}) and {other} (robot {robots[1]}) cannot be mixed for "
            f"policy {config.policy!r}, which predicts one robot's actions; use --policy flow, "
            "which pads every robot's joints to one width"
        )
    embodiments.pop(dataset.spec.robot.name)
    return embodiments


def data_provenance(dataset: Any, config: TrainConfig) -> dict[str, Any]:
    """Return the checkpoint entries that name the training data.

    `dataset_fingerprint` is always present (None where none can be computed). A mix adds
    `dataset_mix`: path, normalised weight, fingerprint, robot and samples of each dataset.
    """
    roots = [source.path for source in config.dataset_sources]
    entries: dict[str, Any] = {"dataset_fingerprint": dataset_fingerprint(dataset, roots)}
    provenance = getattr(dataset, "provenance", None)
    if callable(provenance):
        entries["dataset_mix"] = provenance()
    return entries


def dataset_fingerprint(dataset: Any, roots: Sequence[Path]) -> str | None:
    """Return the dataset's content hash, or None with a warning where none can be computed.

    A `fingerprint` string attribute of the dataset wins (`ChunkDataset` and `ChunkMixture` have
    one). Otherwise one dataset folder is hashed with `robota.datasets.fingerprint`, and several
    are hashed together from their own fingerprints.
    """
    own = getattr(dataset, "fingerprint", None)
    if isinstance(own, str):
        return own
    try:
        from robota.datasets import fingerprint
    except ImportError:
        logger.warning(
            "robota.datasets.fingerprint is not available, so the checkpoint records no "
            "dataset fingerprint"
        )
        return None
    missing = [str(path) for path in roots if not path.is_dir()]
    if missing:
        logger.warning(
            "dataset folder %s not found, so the checkpoint records no dataset fingerprint",
            ", ".join(missing),
        )
        return None
    if len(roots) == 1:
        return fingerprint(roots[0])
    members = json.dumps([fingerprint(path) for path in roots])
    return hashlib.sha256(members.encode()).hexdigest()
