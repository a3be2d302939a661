"""The adapter as operators run it: ``python -m adapter.cli run --config site.yaml`` (or the Java
adapter's flags) in a subprocess with its own log file, for end-to-end tests.

Usage::

    proc = AdapterProcess({"dicomweb": {"url": orthanc.dicomweb_url}, "importer": {}},
                          tmp_path).start()
    proc.port            # the importer's DIMSE port (a free one was filled in)
    proc.kill9(); proc.restart(); proc.log_text(); proc.terminate()

Any config dict works (importer, exporter or both). Unset ports are filled with free ones,
unset paths (spool, state, dead letters) point into ``tmp_path``, and health binds 127.0.0.1.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import yaml

from adapter.legacy_flags import OWN_ENV
from tests.peers.ports import LOOPBACK, free_port, is_listening
from tests.peers.wait import WaitAbortedError, describe_exit, spawn, stop_process, tail, wait_until

__all__ = ["AdapterProcess", "AdapterProcessError"]


def legacy_health_env() -> dict[str, str]:
    """The environment that gives a legacy-flag run (Java flags have no health port) a free
    health port instead of the default 8080, which other legacy runs on the box may hold."""
    return {OWN_ENV["health_port"]: str(free_port())}


class AdapterProcessError(RuntimeError):
    """The adapter did not start (the message ends with its log's tail)."""


def _with_defaults(config: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
    data = copy.deepcopy(dict(config))
    health = data.setdefault("health", {})
    if health.get("enabled", True):
        health.setdefault("bind", LOOPBACK)
        if not health.get("port"):
            health["port"] = free_port()
    data.setdefault("log", {}).setdefault("format", "json")
    data.setdefault("state_dir", str(workdir / "state"))
    importer = data.get("importer")
    if isinstance(importer, dict) and importer.get("enabled", True):
        dimse = importer.setdefault("dimse", {})
        dimse.setdefault("bind", LOOPBACK)
        if not dimse.get("port"):
            dimse["port"] = free_port()
        importer.setdefault("spool", {}).setdefault("path", str(workdir / "spool"))
        importer.setdefault("dead_letter_path", str(workdir / "deadletter"))
    return data


class AdapterProcess:
    """One adapter subprocess; ``start()`` returns once its DIMSE port and health answer."""

    def __init__(
        self,
        config: Mapping[str, Any] | None,
        tmp_path: Path,
        *,
        argv: Sequence[str] | None = None,
        dimse_port: int | None = None,
        name: str = "adapter",
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        """``config``: a site config dict (written to ``<tmp_path>/<name>/site.yaml``); or
        ``argv``: command-line arguments instead (e.g. the Java flags), with ``dimse_port`` to
        wait for."""
        if (config is None) == (argv is None):
            raise ValueError("give either a config dict or argv")
        self.workdir = Path(tmp_path) / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.config = _with_defaults(config, self.workdir) if config is not None else None
        self.argv = list(argv) if argv is not None else None
        self._dimse_port = dimse_port
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ addresses and paths
    @property
    def config_path(self) -> Path:
        return self.workdir / "site.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "adapter.log"

    @property
    def port(self) -> int:
        """The importer's DIMSE port."""
        if self._dimse_port is not None:
            return self._dimse_port
        importer = (self.config or {}).get("importer") or {}
        port = importer.get("dimse", {}).get("port")
        if not port:
            raise AttributeError(f"{self.name} has no importer DIMSE port")
        return int(port)

    @property
    def health_url(self) -> str | None:
        health = (self.config or {}).get("health", {})
        if self.config is None or not health.get("enabled", True):
            return None
        return f"http://{LOOPBACK}:{health['port']}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        base = [sys.executable, "-m", "adapter.cli"]
        if self.argv is not None:
            return [*base, *self.argv]
        return [*base, "run", "--config", str(self.config_path)]

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> AdapterProcess:
        """Spawn the adapter and wait (bounded) until it serves; raises with its log's tail."""
        if self.is_running:
            return self
        if self.config is not None:
            self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = spawn(self.command(), self.log_path, env=env, cwd=Path.cwd())
        try:
            wait_until(
                self._serving,
                timeout=self.startup_timeout,
                interval=0.05,
                what=f"{self.name} to serve",
                abort=lambda: describe_exit(self.proc),
            )
        except (TimeoutError, WaitAbortedError) as exc:
            self.terminate()
            raise AdapterProcessError(
                f"{exc}\n--- {self.log_path} ---\n{tail(self.log_path)}"
            ) from exc
        return self

    def _serving(self) -> bool:
        try:
            port = self.port
        except AttributeError:
            port = None
        if port is not None and not is_listening(port):
            return False
        url = self.health_url
        if url is not None:
            return requests.get(f"{url}/healthz", timeout=1.0).status_code == 200
        return True

    def kill9(self) -> int | None:
        """SIGKILL, as a node failure would: no shutdown code runs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful drain), SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        return stop_process(self.proc, timeout=timeout)

    def restart(self) -> AdapterProcess:
        """Stop if running (SIGTERM), then start again with the same config and ports."""
        if self.is_running:
            self.terminate()
        return self.start()

    # ------------------------------------------------------------------ logs
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines (``log.format: json``, the default here) as dicts."""
        records = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until a log line matches the regex ``pattern``; returns the match."""
        regex = re.compile(pattern)
        return wait_until(
            lambda: regex.search(self.log_text()),
            timeout=timeout,
            interval=0.05,
            what=f"{pattern!r} in {self.log_path}",
        )

    def metrics_text(self) -> str:
        url = self.health_url
        if url is None:
            raise AttributeError(f"{self.name} has no health endpoint")
        return requests.get(f"{url}/metrics", timeout=5).text

    def __enter__(self) -> AdapterProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.terminate()


_ACKED = re.compile(
    r"Received C-STORE Response.*?Affected SOP Instance UID\s*:\s*([0-9.]+).*?"
    r"DIMSE Status\s*:\s*0x0000",
    re.S,
)


def acknowledged(dcmsend_debug_output: str) -> set[str]:
    """SOP Instance UIDs whose C-STORE response dcmsend (``-d``) logged with status Success."""
    blocks = dcmsend_debug_output.split("I: Received C-STORE Response")[1:]
    found = set()
    for block in blocks:
        match = _ACKED.search("Received C-STORE Response" + block.split("I: Sending")[0])
        if match:
            found.add(match.group(1))
    return found


def kill9_during_send(
    adapter: AdapterProcess, files: list[Path], log: Path, called_aet: str, after: int
) -> set[str]:
    """dcmsend ``files`` to ``adapter``, kill -9 it once ``after`` C-STOREs were acknowledged;
    the SOP Instance UIDs the sender saw acknowledged (it never gets the rest)."""
    from tests.peers import dcmtk

    args = [dcmtk.dcmtk_tool("dcmsend"), "-d", "-aec", called_aet, "-to", "10", LOOPBACK]
    sender = spawn([*args, str(adapter.port), *map(str, files)], log, env=dcmtk.dcmtk_env())
    try:
        wait_until(
            lambda: len(acknowledged(log.read_text(errors="replace"))) >= after,
            60,
            interval=0.01,
            what=f"{after} acknowledged C-STOREs",
        )
        adapter.kill9()
        sender.wait(30)
    finally:
        stop_process(sender, timeout=5)
    return acknowledged(log.read_text(errors="replace"))
