"""The shared feature spec: layout, serialisation, instruction tokens, errors."""

from __future__ import annotations

import numpy as np
import pytest

from robota import spec
from robota.errors import SpecError, UnknownNameError


@pytest.fixture
def arm_spec():
    return spec.make_arm_spec(spec.UR5E, 10, {"wrist": (32, 32), "overhead": (32, 32)})


def test_spec_round_trips_through_dict(arm_spec):
    restored = spec.Spec.from_dict(arm_spec.to_dict())
    assert restored == arm_spec
    assert restored.fingerprint() == arm_spec.fingerprint()


def test_policy_input_order(arm_spec):
    assert spec.policy_input_names(arm_spec) == [
        "observation.images.wrist",
        "observation.images.overhead",
        "observation.state",
        "observation.velocity",
        "observation.wrench",
        "observation.part_pose",
        "task_tokens",
    ]


def test_instruction_tokens_round_trip_in_german_and_polish():
    for text in ("Lege das Teil in den Behälter.", "Włóż część do pojemnika."):
        tokens = spec.encode_instruction(text)
        assert tokens.shape == (spec.INSTRUCTION_MAX_BYTES,)
        assert spec.decode_instruction(tokens) == text


def test_long_instruction_cut_at_character_boundary():
    text = "ä" * 40  # 80 bytes, 2 per character
    tokens = spec.encode_instruction(text)
    assert spec.decode_instruction(tokens) == "ä" * 32


def test_build_policy_inputs_batches(arm_spec):
    observation = {
        key: np.zeros(feature.shape, dtype=np.uint8 if feature.is_image else np.float32)
        for key, feature in arm_spec.features.items()
        if key not in (spec.ACTION, spec.TASK)
    }
    observation[spec.TASK] = "Put the part in the bin."
    inputs = spec.build_policy_inputs(arm_spec, [observation, observation])
    assert inputs["observation.images.wrist"].shape == (2, 32, 32, 3)
    assert inputs["observation.state"].dtype == np.float32
    assert inputs[spec.TASK_TOKENS].shape == (2, spec.INSTRUCTION_MAX_BYTES)


def test_wrong_observation_shape_names_key(arm_spec):
    observation = {key: np.zeros(f.shape) for key, f in arm_spec.features.items()}
    observation["observation.wrench"] = np.zeros(5)
    with pytest.raises(SpecError, match="observation.wrench"):
        arm_spec.validate_observation(observation)


def test_unknown_robot_suggests_nearest():
    with pytest.raises(UnknownNameError, match="Did you mean 'ur5e'"):
        spec.get_robot("ur5")


def test_action_shape_must_fit_robot(arm_spec):
    features = dict(arm_spec.features)
    features[spec.ACTION] = spec.FeatureSpec(spec.ACTION, "float32", (6,))
    with pytest.raises(SpecError, match="action shape"):
        spec.Spec(robot=spec.UR5E, fps=10, features=features)
