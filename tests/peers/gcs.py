"""A Cloud Storage emulator (PyPI ``gcp-storage-emulator``, pure Python, in memory) on
127.0.0.1, driven with the real google-cloud-storage client.

Usage::

    emu = GcsEmulator().start()
    emu.env()                      # {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:PORT"}
    emu.create_bucket("b"); emu.objects("b", prefix="dir/"); emu.read("b", "dir/x.dcm")
    emu.stop()

The helper's own client is bound to this emulator explicitly (``client_options``), so it never
depends on (or changes) ``STORAGE_EMULATOR_HOST`` in the test process's environment.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.peers.lifecycle import ManagedPeer
from tests.peers.ports import LOOPBACK, free_port
from tests.peers.wait import WaitAbortedError, describe_exit, spawn, stop_process, tail, wait_until

__all__ = ["GcsEmulator", "GcsEmulatorError"]


class GcsEmulatorError(RuntimeError):
    """The emulator is missing or did not start."""


class GcsEmulator(ManagedPeer):
    """One emulator process (``python -m gcp_storage_emulator start --in-memory``)."""

    def __init__(self, workdir: Path | str | None = None, *, startup_timeout: float = 30.0) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="gcs-emulator-")).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the value for ``STORAGE_EMULATOR_HOST``."""
        if self.port is None:
            raise GcsEmulatorError("emulator has no port yet: call start() first")
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gcs-emulator.log"

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def env(self) -> dict[str, str]:
        """What points a google-cloud-storage client (e.g. the adapter) at this emulator."""
        return {"STORAGE_EMULATOR_HOST": self.url}

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> GcsEmulator:
        """Start on a free port and wait (bounded) until the JSON API answers."""
        if self.is_running:
            return self
        try:
            import gcp_storage_emulator  # noqa: F401
        except ImportError as exc:
            raise GcsEmulatorError(
                "gcp-storage-emulator is not installed: pip install -e '.[test]'"
            ) from exc
        for attempt in range(1, 4):
            self.port = free_port()
            cmd = [sys.executable, "-m", "gcp_storage_emulator", "start"]
            cmd += ["--host", LOOPBACK, "--port", str(self.port), "--in-memory", "--quiet"]
            self.proc = spawn(cmd, self.log_path, cwd=self.workdir)
            try:
                wait_until(
                    self._answers,
                    timeout=self.startup_timeout,
                    interval=0.1,
                    what=f"GCS emulator at {self.url}",
                    abort=lambda: describe_exit(self.proc),
                )
                return self
            except (TimeoutError, WaitAbortedError) as exc:
                stop_process(self.proc, timeout=5.0)
                if attempt == 3:
                    log = tail(self.log_path)
                    raise GcsEmulatorError(f"{exc}\n--- {self.log_path} ---\n{log}") from exc
        raise AssertionError("unreachable")

    def _answers(self) -> bool:
        import requests

        return requests.get(f"{self.url}/storage/v1/b", timeout=2).status_code == 200

    def stop(self, timeout: float = 10.0) -> int | None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is None:
            return None
        return stop_process(self.proc, timeout=timeout)

    def cleanup(self) -> None:
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---------------------------------------------------------------- client
    def client(self) -> Any:
        """A google-cloud-storage Client bound to this emulator, anonymous (cached)."""
        if self._client is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            self._client = storage.Client(
                project="test-project",
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.url},
            )
        return self._client

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(name)

    def objects(self, bucket: str, prefix: str = "") -> list[str]:
        """Object names under ``prefix``, sorted."""
        return sorted(b.name for b in self.client().list_blobs(bucket, prefix=prefix))

    def read(self, bucket: str, name: str) -> bytes:
        return bytes(self.client().bucket(bucket).blob(name).download_as_bytes())

    def content_type(self, bucket: str, name: str) -> str | None:
        blob = self.client().bucket(bucket).get_blob(name)
        return None if blob is None else str(blob.content_type)
