"""Static checks of the Dockerfile and .dockerignore (no container engine needed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Instruction:
    """One Dockerfile instruction with continuation lines joined."""

    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    """A build stage: its FROM image, optional name, and instructions."""

    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def _instructions(text: str) -> list[Instruction]:
    out: list[Instruction] = []
    buf = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, args = buf.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buf = ""
    assert not buf, "dangling line continuation at end of Dockerfile"
    return out


def _parse() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with ${ARG} substituted in FROM lines."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in _instructions(DOCKERFILE.read_text()):
        if ins.keyword == "FROM":
            parts = ins.args.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = None
            if len(parts) >= 3 and parts[1].upper() == "AS":
                name = parts[2]
            stages.append(Stage(image, name))
        elif ins.keyword == "ARG" and not stages:
            key, _, default = ins.args.partition("=")
            args[key.strip()] = default.strip().strip('"')
        elif stages:
            stages[-1].instructions.append(ins)
    return args, stages


def _of(stage: Stage, keyword: str) -> list[Instruction]:
    return [i for i in stage.instructions if i.keyword == keyword]


def _exec_form(ins: Instruction) -> list[str]:
    value = json.loads(ins.args)
    assert isinstance(value, list), f"line {ins.line}: {ins.keyword} must use the JSON exec form"
    return [str(v) for v in value]


def _dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Translate one .dockerignore glob (Go filepath.Match plus ``**``) to a regex."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            close = pattern.index("]", i + 1)
            body = pattern[i + 1 : close]
            out += "[" + ("^" + body[1:] if body[:1] in "^!" and body else re.escape(body)) + "]"
            i = close + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker semantics: a pattern excludes a path or any of its parent dirs; ``!`` re-includes."""
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.match(p) for p in prefixes):
            ignored = not negate
    return ignored


def test_stages_parse_and_use_python_311_slim() -> None:
    _, stages = _parse()
    assert len(stages) >= 2, "expected a multi-stage build"
    names = [s.name for s in stages]
    assert "builder" in names
    for stage in stages:
        assert stage.image == "python:3.11-slim", stage
    runtime = stages[-1]
    assert runtime.name != "builder"


def test_builder_builds_project_wheel_and_runtime_installs_only_wheels() -> None:
    _, stages = _parse()
    builder = next(s for s in stages if s.name == "builder")
    runs = " ".join(i.args for i in _of(builder, "RUN"))
    assert "pip wheel --no-deps" in runs and "/wheels" in runs
    runtime = stages[-1]
    install = " ".join(i.args for i in _of(runtime, "RUN"))
    assert "pip install" in install
    assert "--no-index" in install and "/wheels" in install
    assert "from=builder" in install or any(
        "--from=builder" in c.args for c in _of(runtime, "COPY")
    )


def test_entrypoint_is_the_console_script_declared_in_pyproject() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    _, stages = _parse()
    runtime = stages[-1]
    (entry,) = _of(runtime, "ENTRYPOINT")
    argv = _exec_form(entry)
    assert argv == ["dicom-adapter"], "legacy GKE args must be appended straight to the script"
    assert argv[0] in scripts
    (cmd,) = _of(runtime, "CMD")
    assert _exec_form(cmd) == ["--help"]


def test_chart_command_matches_the_console_script() -> None:
    helpers = (ROOT / "charts/dicom-adapter/templates/_helpers.tpl").read_text()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    match = re.search(r"command:\s*\n\s*-\s*(\S+)", helpers)
    assert match and match.group(1) in scripts


def test_copy_sources_exist_and_are_not_dockerignored() -> None:
    _, stages = _parse()
    patterns = _dockerignore_patterns()
    copies = [c for s in stages for c in _of(s, "COPY") + _of(s, "ADD")]
    assert copies
    for ins in copies:
        if any(t.startswith("--from") for t in ins.args.split()):
            continue  # copies from another stage, not from the build context
        tokens = [t for t in ins.args.split() if not t.startswith("--")]
        *sources, _dest = tokens
        assert sources, f"line {ins.line}: COPY without a source"
        for src in sources:
            matches = list(ROOT.glob(src)) if any(ch in src for ch in "*?[") else [ROOT / src]
            assert matches and all(m.exists() for m in matches), f"line {ins.line}: {src} missing"
            assert not _ignored(src, patterns), (
                f"line {ins.line}: {src} is excluded by .dockerignore"
            )


def test_runtime_user_is_non_root_and_numeric() -> None:
    _, stages = _parse()
    users = _of(stages[-1], "USER")
    assert users, "runtime stage must switch to a non-root USER"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}
    assert user == "10001", "numeric UID lets Kubernetes verify runAsNonRoot"
    runs = " ".join(i.args for i in _of(stages[-1], "RUN"))
    assert "/var/lib/dicom-adapter" in runs and "chown" in runs


def test_workdir_and_expose() -> None:
    _, stages = _parse()
    runtime = stages[-1]
    assert _of(runtime, "WORKDIR"), "runtime stage needs a WORKDIR"
    exposed = {p.split("/")[0] for i in _of(runtime, "EXPOSE") for p in i.args.split()}
    assert {"2575", "8080"} <= exposed


def test_dockerignore_excludes_local_state() -> None:
    patterns = _dockerignore_patterns()
    for path in (".venv", ".git", ".local-stack", ".pytest_cache", ".mypy_cache", ".ruff_cache"):
        assert _ignored(path, patterns), f"{path} should be in .dockerignore"
    assert _ignored("adapter/__pycache__/x.pyc", patterns)
    assert _ignored("importer/sub/mod.pyc", patterns)
    assert _ignored("tests/unit/test_dockerfile.py", patterns)
    for needed in ("pyproject.toml", "README.md", "adapter/cli.py", "importer", "exporter"):
        assert not _ignored(needed, patterns), f"{needed} is needed in the build context"


def test_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed")
    proc = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_builder_copies_everything_the_wheel_needs() -> None:
    """Every package in pyproject's setuptools list and the readme reach the builder stage."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]
    readme = project["project"].get("readme")
    _, stages = _parse()
    builder = next(s for s in stages if s.name == "builder")
    copied: set[str] = set()
    for ins in _of(builder, "COPY"):
        tokens = [t for t in ins.args.split() if not t.startswith("--")]
        copied |= {t.strip("./") for t in tokens[:-1]}
    assert "pyproject.toml" in copied
    if isinstance(readme, str):
        assert readme in copied
    for package in packages:
        assert package.split(".")[0] in copied, f"package {package} is not copied into the builder"
