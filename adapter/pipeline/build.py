"""Assembles one plugin's pipeline in one place: an outbox, a destination handler and a
delivery service per destination its routing names, the router, and the stages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from adapter import metrics
from adapter.deadletter import DeadLetterQueue
from adapter.delivery import DeliveryService
from adapter.destinations import DestinationConfig, build_destination, echo_aets, workers_for
from adapter.pipeline.pipeline import Pipeline
from adapter.pipeline.router import Router
from adapter.pipeline.rules import RoutingConfig
from adapter.pipeline.stage import Stage
from adapter.plugin import PluginContext
from adapter.provenance import ProvenanceLog
from adapter.spool import Spool, SpoolBudget
from adapter.stages import StageConfig, StageContext, build_stage

__all__ = ["BuiltPipeline", "build_pipeline", "check_routing", "outbox_path"]


@dataclass
class BuiltPipeline:
    pipeline: Pipeline
    deliveries: list[DeliveryService]

    def close(self) -> None:
        """Release what stages hold (worker processes), once nothing is routed any more."""
        for stage in self.pipeline.stages.values():
            close = getattr(stage, "close", None)
            if close is not None:
                close()

    def depth(self) -> int:
        return sum(d.outbox.depth() for d in self.deliveries)

    def oldest_age(self) -> float:
        return max((d.outbox.oldest_age() for d in self.deliveries), default=0.0)


def outbox_path(root: Path, destination: str) -> Path:
    """Where one destination's outbox lives under a plugin's outbox root."""
    return Path(root) / destination


def check_routing(
    routing: RoutingConfig,
    available: Sequence[str],
    stages: Sequence[str] = (),
    prefix: str = "routing",
) -> list[str]:
    """Names the rules use that do not exist, as 'key.path: message' lines."""
    problems: list[str] = []
    have = ", ".join(sorted(available)) or "none"
    for i, rule in enumerate(routing.rules):
        for name in rule.destinations:
            if name not in available:
                problems.append(
                    f"{prefix}.rules[{i}].destinations: unknown destination {name!r} (have: {have})"
                )
        for name in rule.stages:
            if name not in stages:
                problems.append(
                    f"{prefix}.rules[{i}].stages: unknown stage {name!r} "
                    f"(have: {', '.join(sorted(stages)) or 'none'})"
                )
    for name in routing.default_stages:
        if name not in stages:
            problems.append(
                f"{prefix}.default_stages: unknown stage {name!r} "
                f"(have: {', '.join(sorted(stages)) or 'none'})"
            )
    if isinstance(routing.default, tuple):
        for name in routing.default:
            if name not in available:
                problems.append(f"{prefix}.default: unknown destination {name!r} (have: {have})")
    return problems


def build_pipeline(
    plugin: str,
    context: PluginContext,
    *,
    routing: RoutingConfig,
    destinations: Mapping[str, DestinationConfig],
    default: Sequence[str],
    outbox_root: Path,
    work_dir: Path,
    budget: SpoolBudget,
    dead_letters: DeadLetterQueue,
    min_free_bytes: int = 0,
    provenance: ProvenanceLog | None = None,
    stages: Mapping[str, StageConfig] | None = None,
    state_dir: Path | None = None,
) -> BuiltPipeline:
    """Every destination the routing can reach gets its outbox and delivery service; every
    stage it names is built once (``state_dir``: where stages keep what survives restarts)."""
    wanted = set(routing.destination_names()) | (set(default) if routing.default is None else set())
    deliveries: dict[str, DeliveryService] = {}
    for name in sorted(wanted):
        cfg = destinations[name]
        outbox = Spool(
            outbox_path(outbox_root, name),
            max_bytes=budget.max_bytes,
            min_free_bytes=min_free_bytes,
            dead_letters=dead_letters,
            budget=budget,
        )
        deliveries[name] = DeliveryService(
            plugin,
            outbox,
            build_destination(name, cfg, context),
            context.retry_policy(cfg.retry),
            workers=workers_for(cfg),
            batch_max_bytes=int(cfg.delivery.batch_max_bytes),
            linger=cfg.delivery.batch_linger,
        )
    router = Router(
        routing,
        default,
        echo_aets={name: echo_aets(destinations[name]) for name in deliveries},
        provenance=provenance,
    )
    built_stages: dict[str, Stage] = {}
    stage_context = StageContext(plugin, Path(state_dir or work_dir), provenance)
    for name in sorted(routing.stage_names()):
        built_stages[name] = build_stage(name, (stages or {})[name], stage_context)
    pipeline = Pipeline(plugin, router, deliveries, work_dir, built_stages)
    for name in deliveries:
        for rule in [*(r.name for r in routing.rules), "default"]:
            metrics.ROUTED_TOTAL.labels(plugin=plugin, rule=rule, destination=name)
    return BuiltPipeline(pipeline, list(deliveries.values()))
