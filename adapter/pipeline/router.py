"""The Router: rules -> which destinations (and stages) an instance takes, less the echoes.

Echo suppression is per destination: an instance never goes back to the PACS it came from
(its calling AE, or the provenance log's record of who sent it), whichever rule names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from adapter.pipeline.instance import Instance
from adapter.pipeline.rules import META_FACTS, RoutingConfig, dataset_values
from adapter.provenance import ProvenanceLog

__all__ = ["DEFAULT_RULE", "Route", "RouteDecision", "Router"]

DEFAULT_RULE = "default"


@dataclass(frozen=True)
class Route:
    """One destination an instance goes to, the rule that sent it there, and its stages."""

    rule: str
    destination: str
    stages: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouteDecision:
    """The routes (empty when dropped), why it was dropped, and the echoes left out."""

    routes: tuple[Route, ...]
    dropped: str | None = None
    echoes: tuple[str, ...] = ()
    rule: str = DEFAULT_RULE

    @property
    def destinations(self) -> tuple[str, ...]:
        return tuple(r.destination for r in self.routes)


class _InstanceFacts:
    """Facts of one instance: origin and UIDs from the spool's record, the rest from the
    header (read on first need)."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance

    def values(self, attribute: str) -> list[str] | None:
        origin = self.instance.origin
        if attribute == "calling_ae":
            return [origin.calling_ae] if origin.calling_ae else None
        if attribute == "called_ae":
            return [origin.called_ae] if origin.called_ae else None
        if attribute == "source":
            return [origin.kind]
        field = META_FACTS.get(attribute)
        if field is not None:
            value = getattr(self.instance.meta, field)
            if value:
                return [value]
        return dataset_values(self.instance.header(), attribute)


class Router:
    """Applies a RoutingConfig; ``default``: where unmatched instances go when the config
    names no default; ``echo_aets``: destination -> the AE titles that PACS sends from."""

    def __init__(
        self,
        config: RoutingConfig,
        default: Sequence[str],
        echo_aets: Mapping[str, frozenset[str]] | None = None,
        provenance: ProvenanceLog | None = None,
    ) -> None:
        self.config = config
        self.default = tuple(default) if config.default is None else config.default
        self.echo_aets = {k: v for k, v in (echo_aets or {}).items() if v}
        self.provenance = provenance

    def route(self, instance: Instance) -> RouteDecision:
        """Decide; reads the header only if a rule needs an attribute beyond UIDs/origin."""
        facts = _InstanceFacts(instance)
        routes: list[Route] = []
        first_rule: str | None = None
        for rule in self.config.rules:
            if not rule.condition.matches(facts):
                continue
            if rule.drop:
                return RouteDecision((), dropped=f"rule {rule.name!r}", rule=rule.name)
            first_rule = first_rule or rule.name
            routes += [Route(rule.name, d, rule.stages) for d in rule.destinations]
            if self.config.mode == "first":
                break
        if first_rule is None:
            if self.default == "drop":
                return RouteDecision((), dropped="no rule matched (default: drop)")
            stages = self.config.default_stages
            routes = [Route(DEFAULT_RULE, d, stages) for d in self.default]
        unique: dict[str, Route] = {}
        for r in routes:
            unique.setdefault(r.destination, r)  # the first rule naming it gives the stages
        kept, echoes = self._without_echoes(instance, list(unique.values()))
        return RouteDecision(tuple(kept), echoes=tuple(echoes), rule=first_rule or DEFAULT_RULE)

    def _without_echoes(
        self, instance: Instance, routes: list[Route]
    ) -> tuple[list[Route], list[str]]:
        if not self.echo_aets:
            return routes, []
        calling = instance.origin.calling_ae
        sources: set[str] | None = None
        kept, echoes = [], []
        for r in routes:
            aets = self.echo_aets.get(r.destination)
            if aets:
                if calling and calling in aets:
                    echoes.append(r.destination)
                    continue
                if self.provenance is not None:
                    if sources is None:
                        sources = self.provenance.sources(instance.sop_instance_uid)
                    if sources & aets:
                        echoes.append(r.destination)
                        continue
            kept.append(r)
        return kept, echoes
