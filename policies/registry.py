"""The registry of policy types, by the name saved in checkpoints."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from robota.errors import UnknownNameError, check_choice
from robota.policies.act import ACTPolicy
from robota.policies.flow import FlowMatchingPolicy
from robota.spec import Spec

# Policy name to its class. Each class has a `name`, a `config_class` dataclass and the constructor
# `(config, spec, stats)`.
POLICIES: dict[str, type[nn.Module]] = {
    ACTPolicy.name: ACTPolicy,
    FlowMatchingPolicy.name: FlowMatchingPolicy,
}


def make_config(name: str, **config_overrides: Any) -> Any:
    """Build the config dataclass of policy `name` with the given fields changed.

    Raises:
        UnknownNameError: `name` is not a registered policy, or an override is not a field of
            its config (both with a did-you-mean).
        SpecError: An override has an invalid value.
    """
    policy_class = POLICIES[check_choice("policy", name, POLICIES)]
    config_class = policy_class.config_class
    fields = [field.name for field in dataclasses.fields(config_class)]
    for key in config_overrides:
        if key not in fields:
            raise UnknownNameError(f"{name} config field", key, fields)
    return config_class(**config_overrides)


def make_policy(
    name: str, spec: Spec, stats: Mapping[str, Any], **config_overrides: Any
) -> nn.Module:
    """Build a freshly initialised policy.

    Args:
        name: Registered policy name, for example `act`.
        spec: Feature spec of the data the policy will see.
        stats: Dataset statistics in LeRobot's `stats.json` form.
        **config_overrides: Fields of the policy's config to change, for example `chunk_size=20`.

    Raises:
        UnknownNameError: `name` or an override is unknown (with a did-you-mean).
        SpecError: An override is invalid, or the statistics lack a feature the policy uses.
    """
    config = make_config(name, **config_overrides)
    return POLICIES[name](config, spec, stats)
