"""Policy registry: construction by name and did-you-mean errors."""

from __future__ import annotations

import pytest

from robota.errors import UnknownNameError
from robota.policies import POLICIES, make_policy

from policy_helpers import TINY_ACT


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_builds(name, tiny_spec, tiny_stats):
    policy = make_policy(name, tiny_spec, tiny_stats, **TINY_ACT)

    assert policy.name == name
    assert policy.config.chunk_size == TINY_ACT["chunk_size"]


def test_unknown_policy_suggests(tiny_spec, tiny_stats):
    with pytest.raises(UnknownNameError, match="Did you mean 'act'"):
        make_policy("acts", tiny_spec, tiny_stats)


def test_unknown_override_suggests(tiny_spec, tiny_stats):
    with pytest.raises(UnknownNameError, match="Did you mean 'chunk_size'"):
        make_policy("act", tiny_spec, tiny_stats, chunksize=5)
