"""robota.edge runs a bundle in a process where torch and the training layers cannot import."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# Modules the edge runtime must never import (the layer rule of robota.edge).
FORBIDDEN = ("torch", "mujoco", "gymnasium", "robota.policies", "robota.sim", "robota.datasets")

SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    FORBIDDEN = {forbidden!r}


    def is_forbidden(name):
        return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if is_forbidden(name):
                raise ModuleNotFoundError(f"{{name}} is blocked in this test", name=name)
            return None


    sys.meta_path.insert(0, Blocker())

    from robota.edge import cli, kinematics, recorder, ros, safety  # noqa: F401
    from robota.edge.executor import AsyncExecutor, SensorFrame
    from robota.edge.policy import BundlePolicy
    from robota.edge.runtime import ControlLoop
    from robota.edge.signing import verify_manifest_signature  # noqa: F401
    from robota.edge.synthetic import synthesize_observations

    bundle = sys.argv[1]
    policy = BundlePolicy.from_path(bundle)
    observation = synthesize_observations(policy.spec, 1)[0]
    stats = ControlLoop(policy, lambda: observation, lambda a: None, 50.0).run(max_ticks=5)
    assert stats.ticks == 5, stats
    assert policy(observation).shape == (7,)
    executor = AsyncExecutor(policy.bundle, lambda: SensorFrame(observation, {{}}), lambda c: None)
    assert executor.run(max_ticks=3).loop.ticks == 3
    assert cli.main(["inspect", bundle]) == 0
    assert cli.main(["bench", "--bundle", bundle, "--iterations", "3"]) == 0

    leaked = sorted(m for m in sys.modules if is_forbidden(m))
    assert not leaked, leaked
    print("EDGE-OK")
    """
)


def test_edge_runs_without_torch(exported_bundle: Path, tmp_path: Path) -> None:
    script = tmp_path / "edge_without_torch.py"
    script.write_text(SCRIPT.format(forbidden=FORBIDDEN))

    result = subprocess.run(
        [sys.executable, str(script), str(exported_bundle)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert "EDGE-OK" in result.stdout
