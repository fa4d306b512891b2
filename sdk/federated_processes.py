"""The Flower processes of a federated run: SuperLink, SuperNodes and `flwr run`, by PID.

Every process starts with telemetry, update checks and runtime dependency installation turned
off and a private `FLWR_HOME` whose `config.toml` names only this run's SuperLink. Every wait has a
deadline, and `FlowerProcesses` stops each process it started by its PID on exit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from robota.federated import APP_CONFIG_KEY, CONNECTION_NAME, FLOWER_ENV, LOOPBACK, FederationConfig, FederationError
from robota.federated_tls import TlsFiles

logger = logging.getLogger(__name__)



def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on `host` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Return the environment of a Flower process: no telemetry, no installs, private home."""
    env = dict(os.environ)
    env.update(FLOWER_ENV)
    env["FLWR_HOME"] = str(flwr_home)
    # The SuperLink and SuperNodes start `flower-superexec` by name, so this venv's scripts come first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _flower_binary(name: str) -> str:
    """Return the path of a Flower console script installed beside this Python."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FederationError(
            f"{name} not found beside {sys.executable} or on PATH; install the extra: "
            "pip install 'robota[federated]'"
        )
    return found


def wait_for_port(host: str, port: int, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Poll until a TCP server accepts on `host:port`.

    Raises:
        FederationError: The port did not open within `timeout_s`, or `process` exited first.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            program = process.args[0] if isinstance(process.args, list) else process.args
            raise FederationError(
                f"process {process.pid} ({program}) "
                f"exited with code {process.returncode} before {host}:{port} opened; see its log"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise FederationError(f"{host}:{port} did not open within {timeout_s:.0f} s; see the process log")


def write_app(folder: Path, config: FederationConfig) -> Path:
    """Write the Flower app folder that `flwr run` packs: a pyproject.toml naming robota's apps.

    The components live in the installed `robota.federated_app`, so the folder holds only the
    app metadata and the run config (the federation settings as one JSON string).
    """
    folder.mkdir(parents=True, exist_ok=True)
    settings = json.dumps(config.to_json())  # A TOML basic string is a JSON string.
    (folder / "pyproject.toml").write_text(
        "[build-system]\n"
        'requires = ["hatchling"]\n'
        'build-backend = "hatchling.build"\n\n'
        "[project]\n"
        'name = "robota-federated"\n'
        'version = "1.0.0"\n'
        "dependencies = []\n\n"
        "[tool.flwr.app]\n"
        'publisher = "robota"\n\n'
        "[tool.flwr.app.components]\n"
        'serverapp = "robota.federated_app:server_app"\n'
        'clientapp = "robota.federated_app:client_app"\n\n'
        "[tool.flwr.app.config]\n"
        f"{APP_CONFIG_KEY} = {settings}\n",
        encoding="utf-8",
    )
    return folder


def write_connection(flwr_home: Path, host: str, port: int, ca_cert: Path | None = None) -> None:
    """Write `$FLWR_HOME/config.toml` with one connection to the SuperLink.

    The file replaces Flower's default, whose entries point at a hosted SuperGrid and at a local
    simulation runtime, so `flwr run` can reach nothing but this SuperLink. Without `ca_cert` the
    connection is insecure (no TLS).
    """
    security = f"root-certificates = {json.dumps(str(ca_cert))}\n" if ca_cert else "insecure = true\n"
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        "[superlink]\n"
        f'default = "{CONNECTION_NAME}"\n\n'
        f"[superlink.{CONNECTION_NAME}]\n"
        f'address = "{host}:{port}"\n' + security,
        encoding="utf-8",
    )


@dataclasses.dataclass
class _Process:
    name: str
    process: subprocess.Popen
    log_path: Path


class FlowerProcesses:
    """The SuperLink, SuperNodes and `flwr run` of one federated run, stopped by PID on exit.

    Args:
        workdir: Folder for `FLWR_HOME`, the app folder and the process logs.
        host: Address the SuperLink listens on; loopback by default.
        tls: The SuperLink's TLS files; None runs every process with `--insecure`.
        supernode_auth: Admit only SuperNodes whose public key was registered with
            `register_site`; needs `tls`.
    """

    def __init__(
        self, workdir: str | Path, host: str = LOOPBACK, *, tls: TlsFiles | None = None, supernode_auth: bool = False
    ):
        if supernode_auth and tls is None:
            raise FederationError("SuperNode authentication needs TLS; pass the TLS files as well")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.tls = tls
        self.supernode_auth = supernode_auth
        self.flwr_home = self.workdir / "flwr-home"
        self.env = flower_env(self.flwr_home)
        self.port = 0
        self.processes: list[_Process] = []

    def __enter__(self) -> FlowerProcesses:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(_Process(name, process, log_path))
        logger.info("started %s (pid %d): %s", name, process.pid, " ".join(command))
        return process

    def start_superlink(self, port: int | None = None, timeout_s: float = 60.0) -> int:
        """Start the SuperLink on `host:port` (a free port by default) and wait until it accepts."""
        self.port = port or free_port(self.host)
        security = ["--insecure"]
        if self.tls is not None:
            security = [
                "--ssl-ca-certfile", str(self.tls.ca_cert),
                "--ssl-certfile", str(self.tls.server_cert),
                "--ssl-keyfile", str(self.tls.server_key),
            ]
        if self.supernode_auth:
            security.append("--enable-supernode-auth")
        command = [
            _flower_binary("flower-superlink"),
            *security,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
            "--isolation",
            "subprocess",
        ]
        process = self._spawn("superlink", command)
        wait_for_port(self.host, self.port, timeout_s, process)
        write_connection(self.flwr_home, self.host, self.port, self.tls.ca_cert if self.tls else None)
        return self.port

    def register_site(self, public_key: str | Path, timeout_s: float = 60.0) -> None:
        """Register a site's OpenSSH public key with the running SuperLink (`flwr supernode register`).

        Raises:
            FederationError: The registration failed or timed out.
        """
        command = [_flower_binary("flwr"), "supernode", "register", str(public_key), CONNECTION_NAME]
        try:
            result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise FederationError(f"registering {public_key} timed out after {timeout_s:.0f} s") from None
        if result.returncode != 0:
            raise FederationError(
                f"registering {public_key} failed (exit code {result.returncode}): "
                f"{(result.stdout + result.stderr).strip()[-500:]}"
            )
        logger.info("registered the SuperNode key %s", public_key)

    def start_site(
        self, name: str, data: str | Path, superlink: str, *,
        extra_node_config: str = "", extra_args: Sequence[str] = (),
        ca_cert: str | Path | None = None, private_key: str | Path | None = None,
    ) -> subprocess.Popen:
        """Start a SuperNode whose node config carries the site's data path.

        Args:
            name: Name of the process and of its log file.
            data: The site's dataset folder; it stays in the node config on this machine.
            superlink: `HOST:PORT` of the SuperLink.
            extra_node_config: More `key=value` node config entries.
            extra_args: More `flower-supernode` arguments.
            ca_cert: CA certificate to verify the SuperLink with; None connects without TLS.
            private_key: The site's OpenSSH private key, for a SuperLink with authentication.
        """
        node_config = f'data-path="{Path(data).resolve()}" {extra_node_config}'.strip()
        security = ["--insecure"] if ca_cert is None else ["--root-certificates", str(ca_cert)]
        if private_key is not None:
            security += ["--auth-supernode-private-key", str(private_key)]
        command = [
            _flower_binary("flower-supernode"),
            *security,
            "--superlink",
            superlink,
            "--node-config",
            node_config,
            "--host",
            LOOPBACK,
            "--port",
            str(free_port()),
            "--isolation",
            "subprocess",
            *extra_args,
        ]
        return self._spawn(name, command)

    def run_app(self, config: FederationConfig, timeout_s: float) -> None:
        """Submit the ServerApp with `flwr run --stream` and wait for the run to end.

        Raises:
            FederationError: The run failed or did not finish within `timeout_s`.
        """
        app = write_app(self.workdir / "app", config)
        command = [_flower_binary("flwr"), "run", str(app), CONNECTION_NAME, "--stream"]
        process = self._spawn("flwr-run", command)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop(process)
            raise FederationError(
                f"the federated run did not finish within {timeout_s:.0f} s; see "
                f"{self.workdir / 'flwr-run.log'} and raise the deadline or lower the rounds"
            ) from None
        log_text = (self.workdir / "flwr-run.log").read_text(errors="replace")
        # `flwr run --stream` exits with 0 even when the ServerApp raised, so the log decides.
        reason = _failure_reason(log_text)
        if code != 0 or reason is not None or not (config.output / "global").is_dir():
            tail = "\n".join(log_text.splitlines()[-15:])
            raise FederationError(
                f"the federated run failed: {reason or f'flwr run exit code {code}'}\n"
                f"last lines of {self.workdir / 'flwr-run.log'}:\n{tail}"
            )

    def stop(self, process: subprocess.Popen, timeout_s: float = 10.0) -> None:
        """Stop one process by its PID: SIGTERM, then SIGKILL past `timeout_s`."""
        if process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)

    def stop_all(self) -> None:
        """Stop every process started here, newest first."""
        for entry in reversed(self.processes):
            self.stop(entry.process)
            logger.info("stopped %s (pid %d)", entry.name, entry.process.pid)


def _failure_reason(log_text: str) -> str | None:
    """Return the error that ended the ServerApp, from its streamed log, or None if it succeeded."""
    lines = log_text.splitlines()
    for line in reversed(lines):
        if "FederationError:" in line or "RobotaError:" in line:
            return line.split("Error: ", 1)[-1].strip()
    markers = ("Traceback (most recent call last)", "An unhandled exception occurred in the ServerApp")
    if any(marker in log_text for marker in markers):
        return "the ServerApp raised an exception"
    return None
