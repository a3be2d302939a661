"""dcmtk command-line peers: SCU wrappers (storescu, dcmsend, findscu, movescu, getscu,
echoscu) and a ``storescp`` server.

Every tool runs from its absolute path (the venv's bin holds pynetdicom apps with the same
names), with a timeout, and with ``TCP_NODELAY=1`` in its environment: without it, dcmtk's
Nagle/delayed-ACK stall costs about 40 ms per DIMSE message on loopback (see
shared/PERFORMANCE-NOTES.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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

DCMTK_BIN_DIR = Path(os.environ.get("DCMTK_BIN_DIR", "/usr/bin"))
DCMTK_TIMEOUT = 120.0
TOOLS = (
    "storescu",
    "storescp",
    "dcmsend",
    "findscu",
    "movescu",
    "getscu",
    "echoscu",
    "dcmcjpeg",
    "dcmcjpls",
    "dcmcrle",
    "dcmconv",
    "dcmdump",
)


class DcmtkError(RuntimeError):
    """A dcmtk tool is missing, failed, or a dcmtk server did not start."""


def dcmtk_tool(name: str) -> str:
    """Absolute path of a dcmtk tool; a clear error (not a skip) when dcmtk is missing."""
    path = DCMTK_BIN_DIR / name
    if not path.is_file():
        raise DcmtkError(
            f"dcmtk tool {path} not found: install the Debian package 'dcmtk' "
            "(.ci/run and scripts/local-stack.sh do)"
        )
    return str(path)


def require_dcmtk(tools: Iterable[str] = TOOLS) -> None:
    for tool in tools:
        dcmtk_tool(tool)


def dcmtk_env(extra: Mapping[str, str] | None = None, *, nodelay: bool = True) -> dict[str, str]:
    """The environment for a dcmtk tool: ours plus ``TCP_NODELAY=1`` (unless ``nodelay`` is
    False, for benchmarks that model a PACS with dcmtk's default stall)."""
    env = dict(os.environ)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    else:
        env.pop("TCP_NODELAY", None)
    env.update(extra or {})
    return env


@dataclass
class ToolResult:
    """Outcome of one dcmtk tool run."""

    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def output(self) -> str:
        """stdout and stderr together (dcmtk logs to stderr or stdout depending on tool)."""
        return f"{self.stdout}\n{self.stderr}"

    def check(self) -> ToolResult:
        """Raise :class:`DcmtkError` unless the tool exited 0."""
        if not self.ok:
            what = "timed out" if self.timed_out else f"exited {self.returncode}"
            raise DcmtkError(
                f"{' '.join(self.cmd)} {what} after {self.duration:.1f}s\n"
                f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}"
            )
        return self


def run_tool(
    name: str,
    args: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = DCMTK_TIMEOUT,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    nodelay: bool = True,
) -> ToolResult:
    """Run a dcmtk tool with a timeout (a timeout gives ``timed_out=True``, not an exception)."""
    cmd = [dcmtk_tool(name), *(os.fspath(a) for a in args)]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=dcmtk_env(env, nodelay=nodelay),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return ToolResult(
            cmd,
            -9,
            _text(exc.stdout),
            _text(exc.stderr),
            time.monotonic() - start,
            timed_out=True,
        )
    return ToolResult(cmd, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def _aet_args(aet: str, called_aet: str) -> list[str]:
    return ["-aet", aet, "-aec", called_aet]


def _file_args(files: Iterable[Path | str]) -> tuple[list[str], bool]:
    paths = [os.fspath(f) for f in files]
    has_dirs = any(os.path.isdir(p) for p in paths)
    return paths, has_dirs


def _key_args(keys: Mapping[str, str] | Sequence[str]) -> list[str]:
    """``{"StudyInstanceUID": "1.2"}`` or ``["StudyInstanceUID=1.2", "PatientName"]`` -> -k ..."""
    items = (
        [f"{k}={v}" if v is not None else k for k, v in keys.items()]
        if isinstance(keys, Mapping)
        else list(keys)
    )
    out: list[str] = []
    for item in items:
        out += ["-k", item]
    return out


# ------------------------------------------------------------------------------------ SCUs
def echoscu(
    port: int,
    host: str = LOOPBACK,
    *,
    aet: str = "ECHOSCU",
    called_aet: str = "ANY-SCP",
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> ToolResult:
    """C-ECHO."""
    args = ["-v", *_aet_args(aet, called_aet), "-to", "10", *extra_args, host, str(port)]
    return run_tool("echoscu", args, timeout=timeout)


def storescu(
    port: int,
    files: Iterable[Path | str],
    host: str = LOOPBACK,
    *,
    aet: str = "STORESCU",
    called_aet: str = "ANY-SCP",
    timeout: float = DCMTK_TIMEOUT,
    exact_syntaxes: bool = True,
    halt: bool = False,
    extra_args: Sequence[str] = (),
    nodelay: bool = True,
) -> ToolResult:
    """C-STORE files (directories are expanded recursively) over one association.

    Runs with ``-v`` so that :func:`count_store_successes` can count the acknowledged
    instances. storescu on its own proposes only uncompressed transfer syntaxes plus at most
    one compressed one (``-xs``, ``-xy``, ...), so a mix of compressed files fails. With
    ``exact_syntaxes`` (the default) this wrapper writes a storescu config file (``-xf``) that
    proposes one presentation context per (SOP class, transfer syntax) pair found in the files
    (at most 128), so every file travels exactly as it is. Unless ``halt``, storescu goes on
    after a failed store (``-nh``).
    """
    paths = expand_files(files)
    args = ["-v", *_aet_args(aet, called_aet), "-to", "30"]
    if not halt:
        args.append("-nh")
    with tempfile.TemporaryDirectory(prefix="storescu-") as tmp:
        if exact_syntaxes and paths:
            cfg = Path(tmp) / "storescu.cfg"
            cfg.write_text(exact_syntax_profile(paths))
            args += ["-xf", str(cfg), "Exact"]
        args += [*extra_args, host, str(port), *map(os.fspath, paths)]
        return run_tool("storescu", args, timeout=timeout, nodelay=nodelay)


def expand_files(files: Iterable[Path | str]) -> list[Path]:
    """Files as given, directories replaced by the files under them (sorted)."""
    out: list[Path] = []
    for f in map(Path, files):
        if f.is_dir():
            out += sorted(p for p in f.rglob("*") if p.is_file())
        else:
            out.append(f)
    return out


def exact_syntax_profile(paths: Iterable[Path]) -> str:
    """A storescu/dcmsend association config with one presentation context per
    (SOP class, transfer syntax) pair in ``paths``, as profile "Exact"."""
    import pydicom  # local: only this helper needs it

    pairs: list[tuple[str, str]] = []
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        pair = (str(ds.file_meta.MediaStorageSOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        if pair not in pairs:
            pairs.append(pair)
    if len(pairs) > 128:
        raise DcmtkError(f"{len(pairs)} (SOP class, transfer syntax) pairs: more than 128")
    syntaxes = sorted({ts for _, ts in pairs})
    lines = ["[[TransferSyntaxes]]"]
    for i, ts in enumerate(syntaxes):
        lines += [f"[TS{i}]", f"TransferSyntax1 = {ts}"]
    lines += ["", "[[PresentationContexts]]", "[PCs]"]
    for i, (sop_class, ts) in enumerate(pairs, start=1):
        lines.append(f"PresentationContext{i} = {sop_class}\\TS{syntaxes.index(ts)}")
    lines += ["", "[[Profiles]]", "[Exact]", "PresentationContexts = PCs", ""]
    return "\n".join(lines)


def dcmsend(
    port: int,
    files: Iterable[Path | str],
    host: str = LOOPBACK,
    *,
    aet: str = "DCMSEND",
    called_aet: str = "ANY-SCP",
    timeout: float = DCMTK_TIMEOUT,
    extra_args: Sequence[str] = (),
    nodelay: bool = True,
) -> ToolResult:
    """C-STORE with dcmsend (negotiates per file's SOP class and transfer syntax; can open
    several associations if more than 128 presentation contexts are needed).

    Note: by default dcmsend may decompress lossless files to Explicit VR LE when the SCP
    picks that; pass ``extra_args=["-dn"]`` to never decompress.
    """
    paths, has_dirs = _file_args(files)
    args = ["-v", *_aet_args(aet, called_aet), "-to", "30"]
    if has_dirs:
        args += ["+sd", "+r"]
    args += [*extra_args, host, str(port), *paths]
    return run_tool("dcmsend", args, timeout=timeout, nodelay=nodelay)


def findscu(
    port: int,
    keys: Mapping[str, str] | Sequence[str],
    host: str = LOOPBACK,
    *,
    level: str | None = "STUDY",
    model: str = "study",
    aet: str = "FINDSCU",
    called_aet: str = "ANY-SCP",
    output_dir: Path | None = None,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> ToolResult:
    """C-FIND. ``model`` is "study", "patient" or "worklist"; ``level`` sets
    QueryRetrieveLevel (None for worklist). With ``output_dir`` each response is written there
    as rsp0001.dcm, rsp0002.dcm, ... (``-X``); see :func:`count_find_responses`."""
    model_flag = {"study": "-S", "patient": "-P", "worklist": "-W"}[model]
    args = ["-v", model_flag, *_aet_args(aet, called_aet), "-to", "30"]
    if level is not None:
        args += ["-k", f"QueryRetrieveLevel={level}"]
    args += _key_args(keys)
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        args += ["-X", "-od", os.fspath(output_dir)]
    args += [*extra_args, host, str(port)]
    return run_tool("findscu", args, timeout=timeout)


def movescu(
    port: int,
    keys: Mapping[str, str] | Sequence[str],
    move_destination: str,
    host: str = LOOPBACK,
    *,
    level: str = "STUDY",
    model: str = "study",
    aet: str = "MOVESCU",
    called_aet: str = "ANY-SCP",
    receive_port: int | None = None,
    output_dir: Path | None = None,
    timeout: float = DCMTK_TIMEOUT,
    extra_args: Sequence[str] = (),
) -> ToolResult:
    """C-MOVE to ``move_destination``. With ``receive_port`` movescu itself listens there
    (``--port``) and stores what it receives into ``output_dir`` (the SCP must know
    ``move_destination`` -> this host and port)."""
    model_flag = {"study": "-S", "patient": "-P"}[model]
    args = ["-v", model_flag, *_aet_args(aet, called_aet), "-aem", move_destination, "-to", "30"]
    args += ["-k", f"QueryRetrieveLevel={level}", *_key_args(keys)]
    if receive_port is not None:
        args += ["--port", str(receive_port)]
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        args += ["-od", os.fspath(output_dir)]
    args += [*extra_args, host, str(port)]
    return run_tool("movescu", args, timeout=timeout)


def getscu(
    port: int,
    keys: Mapping[str, str] | Sequence[str],
    output_dir: Path,
    host: str = LOOPBACK,
    *,
    level: str = "STUDY",
    model: str = "study",
    aet: str = "GETSCU",
    called_aet: str = "ANY-SCP",
    timeout: float = DCMTK_TIMEOUT,
    extra_args: Sequence[str] = (),
) -> ToolResult:
    """C-GET into ``output_dir``."""
    model_flag = {"study": "-S", "patient": "-P"}[model]
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    args = ["-v", model_flag, *_aet_args(aet, called_aet), "-to", "30"]
    args += ["-k", f"QueryRetrieveLevel={level}", *_key_args(keys)]
    args += ["-od", os.fspath(output_dir), *extra_args, host, str(port)]
    return run_tool("getscu", args, timeout=timeout)


# ------------------------------------------------------------------------------------ parsing
_STORE_OK = re.compile(r"Received (?:C-)?Store Response \((Success|Warning[^)]*)\)", re.I)
_STORE_STATUS = re.compile(r"Received (?:C-)?Store Response \(([^)]*)\)", re.I)
_FIND_PENDING = re.compile(r"Received Find Response \d+ \(Pending\)|Find Response:\s*\d+ \(Pending")


def store_response_statuses(result: ToolResult) -> list[str]:
    """Each C-STORE response status storescu/dcmsend logged (``-v``), e.g. ["Success", ...]."""
    return _STORE_STATUS.findall(result.output)


def count_store_successes(result: ToolResult) -> int:
    """How many instances the sender saw acknowledged (status Success or Warning).

    Counts the ``-v`` log lines "Received Store Response (Success)" (storescu) and
    "Received C-STORE Response (Success)" (dcmsend), so it also works for a run that was cut
    short by a timeout or a failure. 0 when nothing matched.
    """
    return len(_STORE_OK.findall(result.output))


def count_find_responses(result: ToolResult) -> int:
    """Number of pending (= matching) C-FIND responses findscu logged with ``-v``."""
    return len(_FIND_PENDING.findall(result.output))


# ------------------------------------------------------------------------------------ storescp
@dataclass
class StoreScpPeer(ManagedPeer):
    """dcmtk ``storescp`` on 127.0.0.1, writing each received instance to ``output_dir``.

    Files are named by storescp's default rule (``-uf``): ``<modality prefix>.<SOP Instance
    UID>`` plus ``extension`` (".dcm"), e.g. ``CT.1.2.826....dcm``; a re-sent instance
    overwrites its file. ``bit_preserving`` (``+B``) writes the data set exactly as received.
    ``ignore`` (``--ignore``) receives without storing (for throughput baselines).
    """

    output_dir: Path | None = None
    aet: str = "STORESCP"
    port: int | None = None
    bit_preserving: bool = True
    ignore: bool = False
    extension: str = ".dcm"
    nodelay: bool = True
    extra_args: Sequence[str] = ()
    startup_timeout: float = 15.0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _owns_dir: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.output_dir is None:
            self.output_dir = Path(tempfile.mkdtemp(prefix="storescp-"))
            self._owns_dir = True
        self.output_dir = Path(self.output_dir).resolve()

    @property
    def directory(self) -> Path:
        assert self.output_dir is not None
        return self.output_dir

    @property
    def log_path(self) -> Path:
        """Outside the output directory, so received_files() never sees it."""
        return self.directory.parent / f"{self.directory.name}.storescp.log"

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        assert self.port is not None
        args = [dcmtk_tool("storescp"), "-v", "-aet", self.aet, "+xa", "-dhl", "-od"]
        args.append(str(self.directory))
        if self.ignore:
            args.append("--ignore")
        if self.bit_preserving:
            args.append("+B")
        if self.extension:
            args += ["-fe", self.extension]
        args += [*self.extra_args, str(self.port)]
        return args

    def start(self) -> StoreScpPeer:
        if self.is_running:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        fixed = self.port is not None
        for attempt in range(1, (1 if fixed else 3) + 1):
            if self.port is None:
                self.port = free_port()
            self.proc = spawn(self.command(), self.log_path, env=dcmtk_env(nodelay=self.nodelay))
            try:
                wait_until(
                    lambda: is_listening(self.port or 0),
                    timeout=self.startup_timeout,
                    interval=0.05,
                    what=f"storescp on port {self.port}",
                    abort=lambda: describe_exit(self.proc),
                )
                return self
            except (TimeoutError, WaitAbortedError) as exc:
                stop_process(self.proc, timeout=2.0)
                if fixed or attempt == 3:
                    raise DcmtkError(f"{exc}\n--- log ---\n{tail(self.log_path)}") from exc
                self.port = None
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.proc is None:
            return None
        return stop_process(self.proc, timeout=timeout)

    def cleanup(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.log_path.unlink(missing_ok=True)

    def received_files(self) -> list[Path]:
        """Files written so far, sorted by name (temporary/partial files excluded)."""
        return sorted(
            p
            for p in self.directory.iterdir()
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".tmp")
        )

    def received_sop_instance_uids(self) -> set[str]:
        """SOP Instance UIDs from the file names (``PREFIX.<uid><extension>``)."""
        uids: set[str] = set()
        for p in self.received_files():
            name = p.name[: -len(self.extension)] if self.extension else p.name
            uids.add(name.split(".", 1)[1] if "." in name else name)
        return uids

    def wait_for_files(self, count: int, timeout: float = 30.0) -> list[Path]:
        def enough() -> list[Path] | None:
            files = self.received_files()
            return files if len(files) >= count else None

        return wait_until(
            enough,
            timeout=timeout,
            interval=0.1,
            what=f"{count} files received by storescp in {self.directory}",
        )

    def clear(self) -> None:
        for p in self.received_files():
            p.unlink(missing_ok=True)

    def log_tail(self, max_bytes: int = 4000) -> str:
        return tail(self.log_path, max_bytes)
