"""The ``dicom-adapter`` command: run, validate, schema, deadletters, and the legacy import/export.

The config is built here, once, from a YAML file or from the Java adapter's flags; nothing deeper
in the code reads flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

from adapter import legacy_flags
from adapter.config import SiteConfig, load_config, load_config_data
from adapter.errors import ConfigError
from adapter.log import configure_logging
from adapter.suggest import did_you_mean

__all__ = ["main", "run_site", "runnable_plugins"]

log = logging.getLogger("adapter")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _version() -> str:
    try:
        return version("dicom-adapter")
    except PackageNotFoundError:
        return "0+unknown"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) that suggest the closest flag or command."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: message (did you mean ...?)`` and exit 2, no usage block."""
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = re.findall(r"'?([\w-]+)'?", choice[2])
            message = f"invalid choice {choice[1]!r}{did_you_mean(choice[1], options)}"
        self.exit(EXIT_CONFIG, f"{self.prog}: {message}; see '{self.prog} --help'\n")

    def unknown_flags(self, extra: Sequence[str]) -> NoReturn:
        """Refuse arguments no option takes, naming the closest option of this command."""
        flags = [o for o in self._option_string_actions if o.startswith("--")]
        bad = [a for a in extra if a.startswith("-")] or list(extra)
        hint = did_you_mean(bad[0].split("=", 1)[0], flags) if bad[0].startswith("-") else ""
        self.error(f"unrecognized argument {bad[0]}{hint}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dicom-adapter",
        description="Bridge a PACS (DIMSE) and a DICOMweb store (e.g. the Google Cloud Healthcare "
        "API), both ways. Configure a site in YAML (see configs/) or pass the Java adapter's "
        "flags to 'import' / 'export'.",
        epilog="Legacy: 'dicom-adapter --dimse_aet=IMPORTADAPTER --dimse_port=2575 "
        "--dicomweb_address=URL' works as 'dicom-adapter import ...'.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the plugins the site YAML enables")
    run.add_argument("--config", "-c", required=True, type=Path, help="site YAML file")
    run.add_argument(
        "--only",
        action="append",
        metavar="PLUGIN",
        help="run only this plugin (repeatable), e.g. one pod per direction on GKE",
    )
    run.add_argument(
        "-v", "--verbose", action="store_true", help="log at DEBUG (= --log-level DEBUG)"
    )
    run.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="override log.level of the site YAML",
    )

    val = sub.add_parser(
        "validate", help="check a site YAML as 'run' would and exit (0 = valid, 2 = invalid)"
    )
    val.add_argument("file", nargs="?", type=Path, metavar="FILE", help="site YAML file")
    val.add_argument("--config", "-c", type=Path, help="site YAML file (same as FILE)")
    val.add_argument("--only", action="append", metavar="PLUGIN", help="as for 'run'")
    val.add_argument("--print", action="store_true", help="print the effective config as JSON")

    sub.add_parser("schema", help="print the JSON Schema of the site YAML")

    rt = sub.add_parser(
        "route", help="print which rule and destinations each file would take (sends nothing)"
    )
    rt.add_argument("files", nargs="+", type=Path, metavar="FILE", help="Part-10 files")
    rt.add_argument("--config", "-c", required=True, type=Path, help="site YAML file")
    rt.add_argument("--plugin", default=None, help="whose rules: importer (default) or exporter")
    rt.add_argument("--calling-ae", default=None, help="as if sent by this calling AE title")
    rt.add_argument("--called-ae", default=None, help="as if sent to this called AE title")
    rt.add_argument("--json", action="store_true", help="one JSON object per file")

    dl = sub.add_parser("deadletters", help="list, retry or purge dead letters")
    dl.add_argument("action", choices=["list", "retry", "purge"])
    dl.add_argument("--config", "-c", required=True, type=Path, help="site YAML file")
    dl.add_argument("--plugin", help="only this plugin's dead letters (importer, exporter)")
    dl.add_argument("--id", action="append", dest="ids", metavar="ID", help="only this entry")
    dl.add_argument("--all", action="store_true", help="every entry (needed for retry/purge)")
    dl.add_argument("--json", action="store_true", help="machine-readable output")

    probe = sub.add_parser("probe", help="C-ECHO a DIMSE listener and GET health URLs (helm test)")
    probe.add_argument("--echo", action="append", default=[], metavar="AE@HOST:PORT")
    probe.add_argument("--calling-ae", default="HELMTEST", help="our AE title for --echo")
    probe.add_argument("--http", action="append", default=[], metavar="URL", help="expect 2xx")
    probe.add_argument("--timeout", type=float, default=10.0, help="seconds per probe")

    for name, what in (("import", "PACS -> DICOMweb"), ("export", "Pub/Sub -> PACS")):
        sub.add_parser(
            name,
            add_help=False,
            help=f"{what} with the Java adapter's flags ('{name} --help' lists them)",
        )
    return parser


def run_site(site: SiteConfig, only: Sequence[str] | None = None) -> int:
    """Build the enabled plugins' services, serve health/metrics, and run until SIGTERM."""
    from adapter.health import HealthServer
    from adapter.plugin import PluginContext, discover_plugins
    from adapter.service import Service, Supervisor

    plugins = discover_plugins()
    names = runnable_plugins(site, only)
    context = PluginContext(site=site)
    services: list[Service] = []
    for name in names:
        services.extend(plugins[name].build(context, site.plugins[name]))
    supervisor = Supervisor(services)
    context.stop_event = supervisor.stop_event
    health = None
    if site.core.health.enabled:
        from adapter.status_report import StatusReport

        letters = {n: plugins[n].dead_letters(site.core, site.plugins[n]) for n in names}
        report = StatusReport(
            site.site,
            supervisor.status,
            supervisor.readiness,
            {n: q for n, q in letters.items() if q is not None},
        )
        health = HealthServer(
            site.core.health.bind, site.core.health.port, supervisor.readiness, report
        )
        health.start()
        log.info("health and metrics on http://%s:%d/", site.core.health.bind, health.port)
    log.info("dicom-adapter %s running site %r: %s", _version(), site.site, ", ".join(names))
    try:
        supervisor.run_forever()
    finally:
        if health is not None:
            health.stop()
        context.close()
    return EXIT_OK


def known_plugin(name: str, flag: str) -> str:
    """``name`` if a plugin has it, else a ConfigError naming the flag and the closest name."""
    from adapter.plugin import discover_plugins

    plugins = discover_plugins()
    if name not in plugins:
        raise ConfigError(
            f"{flag} {name}: unknown plugin{did_you_mean(name, plugins)}; "
            f"have: {', '.join(sorted(plugins))}"
        )
    return name


def runnable_plugins(site: SiteConfig, only: Sequence[str] | None = None) -> list[str]:
    """The plugins ``run`` would start; the same ConfigErrors for ``validate`` and ``run``."""
    for name in only or []:
        known_plugin(name, "--only")
    enabled = site.enabled_plugins()
    off = [n for n in only or [] if n not in enabled]
    if off:
        raise ConfigError(f"{site.source}: --only {off[0]}: {off[0]} is not enabled in this file")
    names = [n for n in enabled if not only or n in only]
    if not names:
        raise ConfigError(
            f"{site.source}: no plugin enabled (add an importer: or exporter: section)"
        )
    return names


def _legacy(command: str, argv: Sequence[str]) -> int:
    if any(a in ("--help", "-h") for a in argv):
        print(
            f"usage: dicom-adapter {command} [--flag=value | --flag value] ...\n\n"
            f"The Java healthcare-dicom-dicomweb-adapter's {command} flags, accepted verbatim:\n"
            + legacy_flags.flags_help(command)
        )
        return EXIT_OK
    data, _warnings = legacy_flags.translate(argv, command)
    site = load_config_data(data, source=f"{command} flags")
    configure_logging(site.core.log.format, site.core.log.level)
    return run_site(site)


def _deadletters(args: argparse.Namespace) -> int:
    from adapter.plugin import discover_plugins

    site = load_config(args.config)
    plugins = discover_plugins()
    if args.plugin:
        known_plugin(args.plugin, "--plugin")
        if args.plugin not in site.enabled_plugins():
            raise ConfigError(f"{site.source}: --plugin {args.plugin}: not enabled in this file")
    if args.action in ("retry", "purge") and not (args.all or args.ids):
        raise ConfigError(f"deadletters {args.action}: give --id ID or --all")
    ids = None if args.all else args.ids
    rows: list[dict[str, Any]] = []
    for name, cfg in site.plugins.items():
        if (args.plugin and name != args.plugin) or name not in site.enabled_plugins():
            continue
        queue = plugins[name].dead_letters(site.core, cfg)
        if queue is None:
            continue
        if args.action == "list":
            rows += [dict(vars(e)) for e in queue.entries() if ids is None or e.id in ids]
        elif args.action == "purge":
            print(f"{name}: purged {queue.purge(ids)}")
        else:
            print(f"{name}: requeued {queue.retry(ids)}")
    if args.action == "list":
        if args.json:
            print(json.dumps(rows, indent=2, default=str))
        else:
            for r in rows:
                status = f" http={r['http_status']}" if r.get("http_status") else ""
                print(
                    f"{r['plugin']}\t{r['id']}\t{r.get('sop_instance_uid') or '-'}"
                    f"\tattempts={r['attempts']}{status}\t{r['reason']}"
                )
            print(f"{len(rows)} dead letter(s)")
    return EXIT_OK


def _route(args: argparse.Namespace) -> int:
    """Dry run of the rules: decision per file, nothing sent, nothing written."""
    from adapter.pipeline.instance import Instance, Origin, OriginKind
    from adapter.plugin import discover_plugins
    from adapter.spool_files import read_spool_meta

    site = load_config(args.config)
    plugins = discover_plugins()
    enabled = site.enabled_plugins()
    name = args.plugin or ("importer" if "importer" in enabled else next(iter(enabled), ""))
    if name not in plugins or name not in site.plugins:
        raise ConfigError(
            f"route --plugin: {name!r} is not enabled in {args.config} "
            f"(enabled: {', '.join(enabled) or 'none'})"
        )
    make_router = getattr(plugins[name], "router", None)
    if make_router is None:
        raise ConfigError(f"route: plugin {name!r} has no routing rules")
    router = make_router(site.core, site.plugins[name])
    kind: OriginKind = "dimse" if name == "importer" else "pubsub"
    status = EXIT_OK
    for path in args.files:
        try:
            meta = read_spool_meta(path, args.calling_ae, args.called_ae)
        except Exception as exc:  # not DICOM: say so and go on with the next file
            print(f"{path}: not a DICOM file: {type(exc).__name__}: {str(exc)[:120]}")
            status = EXIT_FAILURE
            continue
        instance = Instance(path, meta, Origin(kind, args.calling_ae, args.called_ae))
        decision = router.route(instance)
        row = {
            "file": str(path),
            "sop_instance_uid": meta.sop_instance_uid,
            "rule": decision.rule,
            "destinations": list(decision.destinations),
            "stages": {r.destination: list(r.stages) for r in decision.routes if r.stages},
            "dropped": decision.dropped,
            "echoes": list(decision.echoes),
        }
        if args.json:
            print(json.dumps(row))
        elif decision.dropped:
            print(f"{path}: dropped by {decision.dropped}")
        else:
            where = ", ".join(decision.destinations) or "nowhere"
            echo = f" (not back to {', '.join(decision.echoes)}: echo)" if decision.echoes else ""
            print(f"{path}: rule {decision.rule!r} -> {where}{echo}")
    return status


def site_schema() -> dict[str, Any]:
    """JSON Schema of the site YAML: the core keys plus each plugin's section."""
    from adapter.config import CoreConfig
    from adapter.plugin import discover_plugins

    schema = CoreConfig.model_json_schema()
    schema["title"] = "dicom-adapter site configuration"
    defs = schema.setdefault("$defs", {})
    for name, plugin in sorted(discover_plugins().items()):
        sub = plugin.config_model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        defs[sub["title"]] = sub
        off = {  # a disabled section needs none of its keys (as the loader says)
            "type": "object",
            "properties": {"enabled": {"const": False}},
            "required": ["enabled"],
            "propertyNames": {"enum": sorted(sub["properties"])},
        }
        schema["properties"][name] = {"anyOf": [{"$ref": f"#/$defs/{sub['title']}"}, off]}
    schema["additionalProperties"] = False
    return schema


def _validate(args: argparse.Namespace) -> int:
    """``validate [FILE]``: the checks ``run`` makes before it starts anything."""
    if args.file and args.config and args.file != args.config:
        raise ConfigError(f"validate: two files given ({args.file}, {args.config}): give one")
    path = args.file or args.config
    if path is None:
        raise ConfigError("validate: give the site YAML: dicom-adapter validate FILE")
    site = load_config(path)
    names = runnable_plugins(site, args.only)
    if args.print:
        effective = {
            "core": site.core.model_dump(mode="json"),
            **{k: v.model_dump(mode="json") for k, v in site.plugins.items()},
        }
        print(json.dumps(effective, indent=2))
    print(f"{path}: valid (plugins enabled: {', '.join(names)})")
    return EXIT_OK


def _probe(args: argparse.Namespace) -> int:
    """Run every probe, one line each; exit 1 if one failed."""
    from adapter.probe import ProbeError, c_echo, http_ok

    if not args.echo and not args.http:
        raise ConfigError("probe: give --echo AE@HOST:PORT and/or --http URL")
    failed = 0
    checks: list[tuple[Callable[[str, float], str], str]] = [
        (lambda t, s: c_echo(t, args.calling_ae, s), t) for t in args.echo
    ]
    checks += [(http_ok, u) for u in args.http]
    for check, target in checks:
        try:
            print(f"ok: {check(target, args.timeout)}", flush=True)
        except (ProbeError, ValueError) as exc:
            print(f"FAILED: {exc}", flush=True)
            failed += 1
    return EXIT_FAILURE if failed else EXIT_OK


def _user_error(exc: Exception) -> str | None:
    """A one-line explanation for failures that are the user's to fix (missing credentials)."""
    try:
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError:  # pragma: no cover - google-auth is a dependency
        return None
    if isinstance(exc, DefaultCredentialsError):
        return (
            "no Google credentials (Application Default Credentials not found): on GKE use "
            "Workload Identity, elsewhere 'gcloud auth application-default login'; for the "
            "Pub/Sub emulator set exporter.pubsub.emulator_host (or PUBSUB_EMULATOR_HOST)"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = "dicom-adapter"
    try:
        if legacy_flags.is_legacy_import_invocation(args_list):
            return _legacy("import", args_list)
        if args_list and args_list[0] in ("import", "export"):
            return _legacy(args_list[0], args_list[1:])
        parser = _parser()
        args, extra = parser.parse_known_args(args_list)
        if args.command is not None:
            command = f"dicom-adapter {args.command}"
        if extra:
            sub = _subparser(parser, args.command)
            sub.unknown_flags(extra)
        if args.command is None:
            parser.print_help()
            return EXIT_CONFIG
        if args.command == "validate":
            return _validate(args)
        if args.command == "schema":
            print(json.dumps(site_schema(), indent=2, sort_keys=True))
            return EXIT_OK
        if args.command == "deadletters":
            return _deadletters(args)
        if args.command == "route":
            return _route(args)
        if args.command == "probe":
            return _probe(args)
        if args.command == "run":
            site = load_config(args.config)
            level = "DEBUG" if args.verbose else args.log_level or site.core.log.level
            configure_logging(site.core.log.format, level)
            return run_site(site, args.only)
        parser.error(f"unknown command {args.command}")
    except ConfigError as exc:
        print(f"dicom-adapter: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # a service that cannot start: one clear line, not a traceback
        hint = _user_error(exc)
        if hint is not None:
            print(f"{command}: {hint}", file=sys.stderr)
            return EXIT_CONFIG
        if logging.getLogger().handlers:  # the run's log gets it too (JSON for Cloud Logging)
            log.error("dicom-adapter stopped: %s: %s", type(exc).__name__, exc)
        print(f"{command}: cannot run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_FAILURE


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> _Parser:
    """The parser of ``command`` (the top-level one when there is none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            sub = action.choices[command]
            assert isinstance(sub, _Parser)
            return sub
    assert isinstance(parser, _Parser)
    return parser


if __name__ == "__main__":
    sys.exit(main())
