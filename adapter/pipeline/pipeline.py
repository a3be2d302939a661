"""The pipeline proper: an instance in; stages, rules, and a durable hard link into the
outbox of every destination it goes to, out. Shared by both directions.

Import: the C-STORE handler puts the file into the spool (the inbox); the RoutingService
claims it from there, runs :meth:`Pipeline.submit`, then removes it from the inbox.
Export: the Pub/Sub worker fetches the file and calls :meth:`Pipeline.submit` itself.
Entry ids are kept from inbox to outbox, so routing the same entry twice (after a crash
between the link and the inbox removal) links nothing new.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from adapter import metrics
from adapter.delivery import DeliveryService
from adapter.errors import PermanentError, TransientError
from adapter.pipeline.instance import Instance, Origin
from adapter.pipeline.router import Route, RouteDecision, Router
from adapter.pipeline.stage import Drop, Stage
from adapter.pipeline.waiter import DeliveryWaiter, Verdict
from adapter.retry import RetryPolicy
from adapter.spool import Spool, SpoolEntry
from adapter.spool_files import SpoolFullError, fsync_file, new_entry_id
from adapter.status import Status

__all__ = ["Pipeline", "RoutingService"]

log = logging.getLogger(__name__)


class Pipeline:
    """Stages, router and outboxes of one plugin; thread-safe (no state of its own)."""

    def __init__(
        self,
        plugin: str,
        router: Router,
        deliveries: Mapping[str, DeliveryService],
        work_dir: Path,
        stages: Mapping[str, Stage] | None = None,
    ) -> None:
        self.plugin = plugin
        self.router = router
        self.deliveries = dict(deliveries)
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.stages = dict(stages or {})

    def submit(
        self,
        instance: Instance,
        *,
        entry_id: str | None = None,
        waiter: DeliveryWaiter | None = None,
        durable: bool = True,
        sync: bool = True,
    ) -> RouteDecision:
        """Route ``instance`` and link it into its outboxes; returns the decision.

        ``durable``: the file is already fsynced (the inbox); else it is fsynced here once
        (hard links share it). ``sync=False``: the links are made durable later by
        :meth:`sync` (one directory fsync per outbox for a whole batch). Raises
        TransientError (outbox full) or PermanentError (a stage refused it); the caller keeps
        its copy then.
        """
        decision = self.router.route(instance)
        if decision.echoes:
            metrics.NOT_ROUTED_TOTAL.labels(plugin=self.plugin, reason="echo").inc(
                len(decision.echoes)
            )
            log.info(
                "not sent back to %s: it came from there",
                ", ".join(decision.echoes),
                extra={"sop_instance_uid": instance.sop_instance_uid},
            )
        if not decision.routes:
            if decision.dropped:
                metrics.NOT_ROUTED_TOTAL.labels(plugin=self.plugin, reason="rule").inc()
                log.info(
                    "dropped by %s",
                    decision.dropped,
                    extra={"sop_instance_uid": instance.sop_instance_uid},
                )
            if waiter is not None:
                waiter.expect(())
            return decision
        entry_id = entry_id or new_entry_id(instance.origin.calling_ae, instance.origin.called_ae)
        outputs = self._run_stages(instance, decision.routes)
        made: list[Path] = []
        try:
            targets: list[tuple[Route, Instance]] = []
            for route in decision.routes:
                out = outputs[route.stages]
                if isinstance(out, Drop):
                    metrics.NOT_ROUTED_TOTAL.labels(plugin=self.plugin, reason="stage").inc()
                    log.info(
                        "not sent to %s: %s",
                        route.destination,
                        out.reason,
                        extra={"sop_instance_uid": instance.sop_instance_uid},
                    )
                    continue
                targets.append((route, out))
            for out in {id(o): o for _, o in targets}.values():
                if out.path != instance.path:
                    made.append(out.path)
                if out.path != instance.path or not durable:
                    fsync_file(out.path)
            if waiter is not None:
                waiter.expect(r.destination for r, _ in targets)
            for route, out in targets:
                self._link(route, out, entry_id, waiter, sync)
        finally:
            for path in made:
                path.unlink(missing_ok=True)
        return decision

    def _run_stages(
        self, instance: Instance, routes: Sequence[Route]
    ) -> dict[tuple[str, ...], Instance | Drop]:
        """Each distinct stage chain runs once; routes with the same chain share its output."""
        outputs: dict[tuple[str, ...], Instance | Drop] = {}
        for route in routes:
            if route.stages in outputs:
                continue
            current: Instance | Drop = instance
            for name in route.stages:
                if isinstance(current, Drop):
                    break
                current = self.stages[name].process(current, self.work_dir)
            outputs[route.stages] = current
        return outputs

    def sync(self, destinations: Iterable[str]) -> None:
        """Make the links of ``submit(..., sync=False)`` durable: one fsync per outbox."""
        for name in dict.fromkeys(destinations):
            self.deliveries[name].outbox.sync()

    def _link(
        self,
        route: Route,
        instance: Instance,
        entry_id: str,
        waiter: DeliveryWaiter | None,
        sync: bool,
    ) -> None:
        delivery = self.deliveries[route.destination]
        entry = delivery.outbox.link_in(instance.path, entry_id, instance.meta, waiter, sync=sync)
        metrics.ROUTED_TOTAL.labels(
            plugin=self.plugin, rule=route.rule, destination=route.destination
        ).inc()
        if entry is not None and waiter is not None and waiter.mode == "settled":
            failing = delivery.failing
            if failing is not None:  # don't wait on a destination that is down
                waiter.held(route.destination, failing)


class RoutingService:
    """A Service: drains the import spool (inbox) through the pipeline into the outboxes."""

    def __init__(
        self,
        inbox: Spool,
        pipeline: Pipeline,
        policy: RetryPolicy,
        *,
        workers: int = 2,
        rescan_interval: float = 10.0,
        owns_spool: bool = True,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        """``on_stop``: called once routing has stopped (the stages release what they hold)."""
        self.name = "route"
        self.on_stop = on_stop
        self.inbox = inbox
        self.pipeline = pipeline
        self.policy = policy
        self.workers = workers
        self.rescan_interval = rescan_interval
        self.owns_spool = owns_spool
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"route-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self.inbox.wake()
        deadline = time.monotonic() + max(0.0, timeout)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        if self.on_stop is not None:
            self.on_stop()
        if self.owns_spool:
            self.inbox.close()

    def readiness(self) -> dict[str, bool]:
        return {"routing": bool(self._threads) and all(t.is_alive() for t in self._threads)}

    def status(self) -> dict[str, Any]:
        """For /status: the spool (the inbox) in front of the routing."""
        return {
            "kind": "queue",
            "destination": "routing (spool)",
            "spool_depth": self.inbox.depth(),
            "spool_bytes": self.inbox.bytes_used,
            "spool_oldest_age_seconds": round(self.inbox.oldest_age(), 1),
            "workers": f"{sum(t.is_alive() for t in self._threads)}/{self.workers}",
        }

    def _run(self, index: int) -> None:
        next_rescan = time.monotonic() + self.rescan_interval
        while not self._stop.is_set():
            if index == 0 and time.monotonic() >= next_rescan:
                next_rescan = time.monotonic() + self.rescan_interval
                self.inbox.rescan()  # dead letters requeued into the spool
            batch = self.inbox.claim_batch(64, 1 << 40, timeout=1.0, stop=self._stop)
            routed: list[str] = []
            done = [entry for entry in batch if self._route(entry, routed)]
            self.pipeline.sync(routed)  # the links are durable before the inbox copies go
            if done:
                self.inbox.complete(*done)

    def _route(self, entry: SpoolEntry, routed: list[str]) -> bool:
        """True when the entry may leave the inbox (routed, dropped); ``routed`` collects the
        outboxes whose links still need their directory fsync."""
        waiter = entry.waiter
        if waiter is not None and waiter.cancelled:
            return True  # answered with a failure already: the sender resends
        meta = entry.meta
        instance = Instance(entry.path, meta, Origin("dimse", meta.calling_ae, meta.called_ae))
        try:
            decision = self.pipeline.submit(instance, entry_id=entry.id, waiter=waiter, sync=False)
        except (TransientError, SpoolFullError) as exc:
            entry.attempts += 1
            log.warning(
                "routing postponed: %s", exc, extra={"sop_instance_uid": meta.sop_instance_uid}
            )
            self.inbox.release(entry, self.policy.delay_for(entry.attempts, exc))
            return False
        except (PermanentError, Exception) as exc:  # a stage refused it, or a bug
            if not isinstance(exc, PermanentError):
                log.exception("routing failed", extra={"sop_instance_uid": meta.sop_instance_uid})
            self.inbox.dead_letter(entry, {"reason": f"routing: {str(exc)[:300]}"}, "permanent")
            if waiter is not None:
                waiter.expect(("route",))
                waiter.rejected("route", Verdict(Status.CANNOT_UNDERSTAND, str(exc)[:64]))
            return False  # dead_letter moved the file and forgot the entry
        routed += decision.destinations
        return True
