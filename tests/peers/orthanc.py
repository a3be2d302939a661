"""A private Orthanc (with its DICOMweb plugin) on 127.0.0.1, for tests and benchmarks.

Usage::

    peer = OrthancPeer(tmp_path / "orthanc", aet="ORTHANC").start()
    peer.dicomweb_url      # http://127.0.0.1:PORT/dicom-web   (STOW/QIDO/WADO)
    peer.dicom_port        # C-STORE/C-FIND/C-MOVE/C-GET SCP on 127.0.0.1
    peer.stop(); peer.start()   # same ports, same storage: the data survive
    peer.stop()

Never touches the system Orthanc service: each peer has its own config, storage and index in
its own directory and is stopped by the PID it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from tests.peers.lifecycle import ManagedPeer
from tests.peers.ports import LOOPBACK, free_port, is_listening
from tests.peers.wait import (
    WaitAbortedError,
    describe_exit,
    spawn,
    stop_process,
    tail,
    wait_until,
)

ORTHANC_BIN = os.environ.get("ORTHANC_BIN", "/usr/sbin/Orthanc")
PLUGIN_DIR = Path(os.environ.get("ORTHANC_PLUGIN_DIR", "/usr/share/orthanc/plugins"))
DICOMWEB_PLUGIN = PLUGIN_DIR / "libOrthancDicomWeb.so"
PYTHON_PLUGIN = PLUGIN_DIR / "libOrthancPython.so"

DICOM_JSON = "application/dicom+json"
SOP_INSTANCE_UID_TAG = "00080018"
STUDY_INSTANCE_UID_TAG = "0020000D"
SERIES_INSTANCE_UID_TAG = "0020000E"

#: A DicomModalities entry: ``(aet, host, port)`` or Orthanc's object form
#: ``{"AET": ..., "Host": ..., "Port": ..., "AllowEcho": ..., ...}``.
Modality = tuple[str, str, int] | Mapping[str, Any]


class OrthancError(RuntimeError):
    """Orthanc could not be started, or answered a request with an error."""


def require_orthanc() -> None:
    """Raise :class:`OrthancError` with an install hint if Orthanc or its DICOMweb plugin is
    missing (tests must fail, not skip: CI installs them)."""
    missing = [p for p in (Path(ORTHANC_BIN), DICOMWEB_PLUGIN) if not p.exists()]
    if missing:
        raise OrthancError(
            f"missing {', '.join(map(str, missing))}: install the Debian packages "
            "'orthanc orthanc-dicomweb' (.ci/run and scripts/local-stack.sh do)"
        )


class OrthancPeer(ManagedPeer):
    """One Orthanc process with its own config, storage and ports.

    Ports are chosen on first :meth:`start` (unless given) and kept for later starts, so a test
    can stop Orthanc for a while and start it again at the same address with the same data.
    """

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        aet: str = "ORTHANC",
        http_port: int | None = None,
        dicom_port: int | None = None,
        modalities: Mapping[str, Modality] | None = None,
        extra_plugins: Sequence[Path | str] = (),
        python_script: Path | str | None = None,
        overwrite_instances: bool = False,
        stable_age: int = 1,
        concurrent_jobs: int = 2,
        check_called_aet: bool = False,
        always_allow: bool = True,
        sync_storage: bool = False,
        extra_config: Mapping[str, Any] | None = None,
        verbose: bool = False,
        startup_timeout: float = 30.0,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="orthanc-peer-")).resolve()
        self.aet = aet
        self.http_port = http_port
        self._dicom_port = dicom_port
        self._ports_fixed = http_port is not None or dicom_port is not None
        self.modalities: dict[str, Modality] = dict(modalities or {})
        self.extra_plugins = [str(p) for p in extra_plugins]
        self.python_script = Path(python_script).resolve() if python_script else None
        self.overwrite_instances = overwrite_instances
        self.stable_age = stable_age
        self.concurrent_jobs = concurrent_jobs
        self.check_called_aet = check_called_aet
        self.always_allow = always_allow
        self.sync_storage = sync_storage
        self.extra_config: dict[str, Any] = dict(extra_config or {})
        self.verbose = verbose
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_count = 0

    # ---------------------------------------------------------------- addresses and paths
    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def dicom_port(self) -> int:
        if self._dicom_port is None:
            raise OrthancError("Orthanc has no DICOM port yet: call start() first")
        return self._dicom_port

    @property
    def http_url(self) -> str:
        if self.http_port is None:
            raise OrthancError("Orthanc has no HTTP port yet: call start() first")
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb root without trailing slash (``.../dicom-web``)."""
        return f"{self.http_url}/dicom-web"

    @property
    def config_path(self) -> Path:
        return self.workdir / "orthanc.json"

    @property
    def log_path(self) -> Path:
        """Orthanc's stdout+stderr, appended across restarts."""
        return self.workdir / "orthanc.log"

    @property
    def storage_dir(self) -> Path:
        return self.workdir / "storage"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, max_bytes: int = 4000) -> str:
        return tail(self.log_path, max_bytes)

    # ---------------------------------------------------------------- configuration
    def config(self) -> dict[str, Any]:
        """The JSON configuration written for the next start."""
        plugins = [str(DICOMWEB_PLUGIN), *self.extra_plugins]
        cfg: dict[str, Any] = {
            "Name": f"test-{self.aet}",
            "StorageDirectory": str(self.storage_dir),
            "IndexDirectory": str(self.storage_dir),
            "StorageCompression": False,
            "SyncStorageArea": self.sync_storage,
            "Plugins": plugins,
            "ConcurrentJobs": self.concurrent_jobs,
            "JobsHistorySize": 100,
            "SaveJobs": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "HttpDescribeErrors": True,
            "HttpCompressionEnabled": False,
            "KeepAlive": True,
            "TcpNoDelay": True,
            "HttpTimeout": 30,
            "HttpRequestTimeout": 60,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "ExecuteLuaEnabled": False,
            "RestApiWriteToFileSystemEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self._dicom_port,
            "DicomCheckCalledAet": self.check_called_aet,
            "StrictAetComparison": False,
            "DicomCheckModalityHost": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": self.always_allow,
            "DicomAlwaysAllowFindWorklist": self.always_allow,
            "DicomAlwaysAllowGet": self.always_allow,
            "DicomAlwaysAllowMove": self.always_allow,
            "DicomModalitiesInDatabase": False,
            "DicomModalities": {
                name: list(m) if isinstance(m, tuple) else dict(m)
                for name, m in self.modalities.items()
            },
            "UnknownSopClassAccepted": True,
            "DicomScpTimeout": 30,
            "DicomScuTimeout": 15,
            "DicomAssociationCloseDelay": 2,
            "DicomThreadsCount": 4,
            "OverwriteInstances": self.overwrite_instances,
            "StableAge": self.stable_age,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "CheckRevisions": False,
            "MetricsEnabled": True,
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": True,
                "WadoRoot": "/wado",
                "Ssl": False,
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            },
        }
        if self.python_script is not None:
            cfg["Plugins"].append(str(PYTHON_PLUGIN))
            cfg["PythonScript"] = str(self.python_script)
            cfg["PythonVerbose"] = False
        _deep_update(cfg, self.extra_config)
        return cfg

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> OrthancPeer:
        """Start Orthanc and wait (bounded) until REST and DICOM ports answer.

        On the first start with automatically chosen ports, a port lost to another process
        between choice and bind is retried with new ports (up to 3 times).
        """
        if self.is_running:
            return self
        require_orthanc()
        attempts = 1 if (self._ports_fixed or self.start_count > 0) else 3
        for attempt in range(1, attempts + 1):
            if self.http_port is None:
                self.http_port = free_port()
            if self._dicom_port is None:
                self._dicom_port = free_port()
            try:
                self._start_once()
                self.start_count += 1
                return self
            except OrthancError:
                if attempt == attempts or self.is_running:
                    raise
                # Most likely a port taken between free_port() and bind: pick new ones.
                self.http_port = None
                self._dicom_port = None
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self._write_config()
        cmd: list[str] = [ORTHANC_BIN]
        if self.verbose:
            cmd.append("--verbose")
        cmd.append(str(self.config_path))
        self.proc = spawn(cmd, self.log_path, cwd=self.workdir)
        try:
            wait_until(
                self._answers,
                timeout=self.startup_timeout,
                interval=0.1,
                what=f"Orthanc at {self.http_url} (DICOM port {self._dicom_port})",
                abort=lambda: describe_exit(self.proc),
            )
        except (TimeoutError, WaitAbortedError) as exc:
            if self.proc is not None:
                stop_process(self.proc, timeout=5.0)
            raise OrthancError(f"{exc}\n--- {self.log_path} (tail) ---\n{self.log_tail()}") from exc

    def _answers(self) -> bool:
        r = requests.get(f"{self.http_url}/system", timeout=2)
        return r.status_code == 200 and is_listening(self.dicom_port)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM by PID, SIGKILL after ``timeout`` s. Ports and storage are kept."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # in case it was frozen
        return stop_process(self.proc, timeout=timeout)

    def kill(self) -> int | None:
        """Crash Orthanc (SIGKILL, no clean shutdown). Ports and storage are kept."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        return stop_process(self.proc, timeout=5.0)

    def restart(self) -> OrthancPeer:
        self.stop()
        return self.start()

    def freeze(self) -> None:
        """SIGSTOP: the ports stay open but nothing answers (a hung peer)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        """Stop and, if the work dir was created by this peer, delete it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __repr__(self) -> str:
        return (
            f"OrthancPeer(aet={self.aet!r}, http={self.http_port}, dicom={self._dicom_port}, "
            f"pid={self.pid}, running={self.is_running})"
        )

    # ---------------------------------------------------------------- REST
    def request(
        self, method: str, path: str, *, timeout: float = 30.0, **kwargs: Any
    ) -> requests.Response:
        """An HTTP request to ``http_url + path``; raises :class:`OrthancError` on 4xx/5xx."""
        r = requests.request(method, f"{self.http_url}{path}", timeout=timeout, **kwargs)
        if r.status_code >= 400:
            raise OrthancError(f"{method} {path} -> {r.status_code}: {r.text[:500]}")
        return r

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post_json(self, path: str, body: Any, **kwargs: Any) -> Any:
        r = self.request("POST", path, data=json.dumps(body), **kwargs)
        return r.json() if r.content else None

    def statistics(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get_json("/statistics")
        return result

    def instance_count(self) -> int:
        return int(self.statistics()["CountInstances"])

    def wait_for_instance_count(self, expected: int, timeout: float = 30.0) -> int:
        """Wait until Orthanc holds at least ``expected`` instances; returns the count."""
        return wait_until(
            lambda: (n := self.instance_count()) >= expected and n,
            timeout=timeout,
            interval=0.2,
            what=f"{expected} instances in Orthanc {self.http_url}",
        )

    def upload_file(self, path: Path | str) -> dict[str, Any]:
        """POST a Part-10 file to ``/instances`` (Orthanc's own REST, not STOW)."""
        data = Path(path).read_bytes()
        result: dict[str, Any] = self.request(
            "POST", "/instances", data=data, headers={"Content-Type": "application/dicom"}
        ).json()
        return result

    def find_instance_id(self, sop_instance_uid: str) -> str | None:
        """Orthanc's internal ID of the instance with this SOP Instance UID, or None."""
        hits = self.request("POST", "/tools/lookup", data=sop_instance_uid).json()
        for hit in hits or []:
            if hit.get("Type") == "Instance":
                return str(hit["ID"])
        return None

    def get_instance_file(self, sop_instance_uid: str) -> bytes:
        """The stored Part-10 bytes of an instance (as Orthanc stored them)."""
        oid = self.find_instance_id(sop_instance_uid)
        if oid is None:
            raise KeyError(f"instance {sop_instance_uid} not in Orthanc {self.http_url}")
        return self.request("GET", f"/instances/{oid}/file").content

    def instance_tags(self, sop_instance_uid: str) -> dict[str, Any]:
        """``/instances/{id}/simplified-tags`` of one instance."""
        oid = self.find_instance_id(sop_instance_uid)
        if oid is None:
            raise KeyError(f"instance {sop_instance_uid} not in Orthanc {self.http_url}")
        result: dict[str, Any] = self.get_json(f"/instances/{oid}/simplified-tags")
        return result

    def clear(self) -> None:
        """Delete every patient (and so every study, series and instance)."""
        for pid in self.get_json("/patients"):
            self.request("DELETE", f"/patients/{pid}")

    # ---------------------------------------------------------------- modalities
    def add_modality(self, name: str, aet: str, port: int, host: str = LOOPBACK) -> None:
        """Declare a remote DICOM node, now (REST) and for later restarts (config)."""
        self.modalities[name] = (aet, host, port)
        if self.is_running:
            self.request(
                "PUT", f"/modalities/{name}", json={"AET": aet, "Host": host, "Port": port}
            )

    def echo_modality(self, name: str) -> bool:
        try:
            self.request("POST", f"/modalities/{name}/echo", data="{}")
        except OrthancError:
            return False
        return True

    def store_to_modality(self, name: str, resources: Iterable[str]) -> Any:
        """Synchronous C-STORE of Orthanc resources (IDs) to a declared modality."""
        return self.post_json(
            f"/modalities/{name}/store", {"Resources": list(resources), "Synchronous": True}
        )

    # ---------------------------------------------------------------- DICOMweb (QIDO)
    def qido(self, path: str, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """GET ``dicomweb_url + path`` as DICOM JSON (``[]`` for 204 No Content)."""
        r = requests.get(
            f"{self.dicomweb_url}{path}",
            params=dict(params or {}),
            headers={"Accept": DICOM_JSON},
            timeout=30,
        )
        if r.status_code == 204 or not r.content:
            return []
        if r.status_code >= 400:
            raise OrthancError(f"QIDO {path} -> {r.status_code}: {r.text[:500]}")
        result: list[dict[str, Any]] = r.json()
        return result

    def qido_studies(self) -> list[dict[str, Any]]:
        return self.qido("/studies")

    def qido_instances(self, study_uid: str | None = None) -> list[dict[str, Any]]:
        """QIDO-RS instances, all or of one study, as DICOM JSON objects."""
        path = f"/studies/{study_uid}/instances" if study_uid else "/instances"
        return self.qido(path)

    def sop_instance_uids(self, study_uid: str | None = None) -> set[str]:
        """The SOP Instance UIDs that QIDO reports."""
        return {
            str(_first_value(item, SOP_INSTANCE_UID_TAG)) for item in self.qido_instances(study_uid)
        }


def _first_value(item: Mapping[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def _deep_update(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
