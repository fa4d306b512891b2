"""robota.edge: the torch-free runtime that runs exported policy bundles on the robot's computer.

Modules:
    manifest: the bundle format (`manifest.json` schema, reading and writing).
    bundle: `load_bundle` verifies a bundle and runs its model with ONNX Runtime.
    policy: `BundlePolicy` turns action chunks into one action per control step.
    runtime: `ControlLoop` runs a policy at a fixed rate.
    executor: `AsyncExecutor` runs a bundle at a fixed rate with asynchronous inference and
        temporal ensembling of action chunks.
    safety: `SafetyFilter` limits every action and holds on stale sensors or excess wrench.
    kinematics: numpy forward kinematics from DH parameters, for the workspace check.
    ros: `RosBridgeIO` reads sensor topics and publishes commands through rosbridge.
    recorder: `EdgeLogWriter` logs every executed tick for import as a dataset.
    signing: Ed25519 signatures over the manifest.
    synthetic: observations drawn from a spec, for benchmarks and checks without data.
    cli: the `robota-edge` command.

This package imports numpy, onnxruntime, cryptography (when signatures are used), `robota.spec`
and `robota.errors` only, never torch, mujoco or the training code, so it installs on a factory
PC with `pip install 'robota[edge]'`.
Importing the package itself loads no submodule, so it stays cheap.
"""
