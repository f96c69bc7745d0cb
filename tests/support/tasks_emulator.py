"""gcloud-tasks-emulator for the tests, in a virtual environment of its own.

The emulator (0.6.2) pins protobuf<5, which the project's own Google clients cannot share,
so it lives in `.venv-tasks-emulator/` at the repository root, created on first use (or by
`.ci/run`), and the project's real client talks to it over an insecure gRPC channel.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc

from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
EMULATOR_VENV = ROOT / ".venv-tasks-emulator"
EMULATOR_VERSION = "0.6.2"


def emulator_binary() -> Path:
    """The emulator's entry point, installing it into its own venv the first time (under a
    lock: the test workers of one run may all need it at once)."""
    binary = EMULATOR_VENV / "bin" / "gcloud-tasks-emulator"
    if binary.is_file():
        return binary
    with open(f"{EMULATOR_VENV}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if binary.is_file():  # another worker installed it while this one waited
            return binary
        subprocess.run([sys.executable, "-m", "venv", str(EMULATOR_VENV)], check=True)
        pip = EMULATOR_VENV / "bin" / "pip"
        subprocess.run(
            [str(pip), "install", "--quiet", f"gcloud-tasks-emulator=={EMULATOR_VERSION}"],
            check=True,
        )
    return binary


class TasksEmulator:
    """One emulator process; tasks it dispatches go to http://127.0.0.1:<target_port>."""

    def __init__(self, target_port: int, log: Path) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """host:port for CLOUD_TASKS_EMULATOR_HOST."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the emulator and wait until its gRPC port accepts connections."""
        command = [
            str(emulator_binary()),
            "start",
            "--port", str(self.port),
            "--target-host", "127.0.0.1",
            "--target-port", str(self.target_port),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        channel = grpc.insecure_channel(self.host)
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
        finally:
            channel.close()
        time.sleep(0.2)  # the servicer registers just after the port opens

    def stop(self) -> None:
        """Stop the emulator (its queues and tasks are in memory and are lost)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
