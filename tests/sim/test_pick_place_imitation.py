"""The pick-place expert is easy to imitate: a small behaviour-cloning policy learns it."""

from __future__ import annotations

import numpy as np
import pytest

import robota.sim
from robota.sim.expert import PickPlaceExpert
from robota.sim.rollout import run_episode
from robota.spec import OBS_PART_POSE, OBS_STATE, OBS_VELOCITY

torch = pytest.importorskip("torch")


def features(observation) -> np.ndarray:
    """Joint state, scaled velocities and reported part pose `(16,)`."""
    return np.r_[
        observation[OBS_STATE],
        observation[OBS_VELOCITY] * 0.1,
        observation[OBS_PART_POSE],
    ].astype(np.float32)


def collect_demonstrations(env, seeds) -> tuple[torch.Tensor, torch.Tensor]:
    """Observation features and expert labels: joint target offsets, then the gripper command."""
    inputs, labels = [], []

    def record(observation, action):
        inputs.append(features(observation))
        labels.append(np.r_[action[:6] - observation[OBS_STATE][:6], action[6]].astype(np.float32))

    expert = PickPlaceExpert(env)
    for seed in seeds:
        run_episode(env, expert, seed, on_step=record)
    return torch.tensor(np.array(inputs)), torch.tensor(np.array(labels))


class MlpPolicy:
    """Stateless MLP on one observation, trained by mean squared error on standardised data."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, steps: int = 2000):
        torch.manual_seed(0)
        self.input_mean, self.input_std = inputs.mean(0), inputs.std(0) + 1e-6
        self.label_mean, self.label_std = labels.mean(0), labels.std(0) + 1e-6
        self.net = torch.nn.Sequential(
            torch.nn.Linear(inputs.shape[1], 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, labels.shape[1]),
        )
        optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        x = (inputs - self.input_mean) / self.input_std
        y = (labels - self.label_mean) / self.label_std
        generator = torch.Generator().manual_seed(0)
        for _ in range(steps):
            batch = torch.randint(0, len(x), (256,), generator=generator)
            loss = ((self.net(x[batch]) - y[batch]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def reset(self) -> None:
        """Keep no state between episodes."""

    def __call__(self, observation) -> np.ndarray:
        x = (torch.from_numpy(features(observation)) - self.input_mean) / self.input_std
        with torch.no_grad():
            y = (self.net(x) * self.label_std + self.label_mean).numpy()
        return np.r_[observation[OBS_STATE][:6] + y[:6], y[6]].astype(np.float32)


@pytest.mark.slow
def test_behaviour_cloning_reaches_80_percent():
    torch.set_num_threads(1)
    env = robota.sim.make_env("pick-place", render_images=False)
    inputs, labels = collect_demonstrations(env, range(1000, 1100))
    policy = MlpPolicy(inputs, labels)

    results = [run_episode(env, policy, seed) for seed in range(20)]
    env.close()
    assert sum(r.success for r in results) >= 16
