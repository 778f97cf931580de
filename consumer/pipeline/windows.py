"""Stage: evaluation windows, i.e. when the trigger, vetting and LensNet look at a star.

A star is evaluated once per window of ``trigger.evaluation_days`` of observation time, on its
buffers as they stand at the end of the window, so that decisions depend on the data and not
on how messages were batched. A batch's messages (each partition's in the aligner's order) are
grouped by window, ``floor(HJD / evaluation_days)`` of a message's first row, ascending; a
message whose window is earlier than its predecessor's (late data) stays where it is and joins
the window still open. Window by window:

1. its messages close the earlier windows still open on their partitions: the stars those
   changed are evaluated (:class:`~consumer.pipeline.trigger.TriggerStage`, then
   :func:`~consumer.pipeline.vetting.vet_triggered` across partitions, then
   :meth:`Scorer.select <consumer.pipeline.scoring.Scorer.select>`);
2. its messages are buffered into the stores (:func:`~consumer.pipeline.buffer.buffer`) and the
   stars they change join the window, now open.

After the last window, partitions whose data is all in (``trigger.evaluate_when_caught_up``)
have their open window evaluated without waiting for it to close (it stays open: newer rows
evaluate the stars again), and the candidates selected are scored by LensNet in one batched
pass (:meth:`Scorer.decide <consumer.pipeline.scoring.Scorer.decide>`), or in several when
more than ``model.max_pending`` wait; then the event model fits the new alerts and refits the
followed stars the windows changed (:mod:`consumer.pipeline.event_model`). The alerts, event
updates and dead letters come back to the caller to publish; nothing here touches Kafka.

Replays: where the rows closing a window replay input that was committed before, whoever
committed it decided already. The trigger and the selection run again, for the state they keep
(cached medians, when each star was last scored), but the model does not, and the replayed
input's dead letters are not sent again.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from consumer.edge.alert import Alert
from consumer.edge.events import EventUpdate
from consumer.health import Metrics
from consumer.pipeline.buffer import buffer
from consumer.pipeline.event_model import EventModelStage, Snapshot
from consumer.pipeline.ingest import DeadLetter, IngestResult, Part
from consumer.pipeline.scoring import Pending, Scorer
from consumer.pipeline.trigger import Triggered, TriggerStage
from consumer.pipeline.vetting import could_drop, vet_triggered
from consumer.settings import Settings
from consumer.state.partitions import Partitions

#: Whether a partition has read everything there is to read now (the aligner knows).
CaughtUp = Callable[[int], bool]
#: What changed a window of one partition: per message, the star ids and its Kafka timestamp.
Changes = list[tuple[npt.NDArray[np.int64], int]]


@dataclass
class BatchReport:
    """Counts of one batch, logged as its canonical line."""

    messages: int = 0
    observations: int = 0
    rejected: int = 0
    dead_letters: int = 0
    stars_changed: int = 0
    rising: int = 0
    #: Passed the rising test but not fitted: alerted, or waiting for their rescore.
    unfitted: int = 0
    triggered: int = 0
    vetted_out: int = 0
    scored: int = 0
    #: At or above the alert threshold, held back by the magnification gate.
    deferred: int = 0
    alerts: int = 0
    refits: int = 0
    event_updates: int = 0
    replayed_partitions: list[int] = field(default_factory=list)


@dataclass
class Evaluated:
    """What the stage made of one batch, for the caller to publish and commit."""

    report: BatchReport
    #: Alerts decided, in the order they were decided.
    alerts: list[tuple[Pending, Alert]] = field(default_factory=list)
    #: Updates of followed events (the events topic), in the order they were decided.
    events: list[EventUpdate] = field(default_factory=list)
    #: Dead letters to send (those of replayed input were sent when it was first processed).
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: Partitions whose stores the evaluations changed: an aborted batch must restore them too.
    partitions: set[int] = field(default_factory=set)


@dataclass
class _Batch:
    """One batch on its way through the stage."""

    out: Evaluated
    #: Candidates selected and not yet scored.
    pending: list[Pending] = field(default_factory=list)
    #: Followed stars as windows left them, refitted when the candidates are decided.
    snapshots: list[Snapshot] = field(default_factory=list)


class WindowStage:
    """Buffers batches window by window and evaluates the windows they close."""

    def __init__(
        self, settings: Settings, partitions: Partitions, scorer: Scorer, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.partitions = partitions
        self.scorer = scorer
        self.metrics = metrics
        self.trigger = TriggerStage(settings.trigger)
        self.events = EventModelStage(settings.events) if settings.events.enabled else None

    def due(self, caught_up: CaughtUp) -> bool:
        """A restored partition has an unevaluated window and all of its data is in: worth a
        batch even without messages."""
        restored = {p for p, state in self.partitions.owned.items() if state.restored}
        return bool(self._caught_up_windows(restored, caught_up))

    def run(self, result: IngestResult, caught_up: CaughtUp) -> Evaluated:
        """Buffer and evaluate one batch of decoded messages (in the aligner's order)."""
        partitions = self.partitions
        # Partitions with input already processed and committed in this batch make no alerts
        # (their decisions were published, or not, the first time).
        sources = [(i.topic, i.partition, i.offset) for i in result.parts] + [
            (i.topic, i.partition, i.offset) for i in result.dead_letters
        ]
        replayed = {p for t, p, o in sources if partitions.replaying(t, p, o)}
        report = BatchReport(messages=result.messages, replayed_partitions=sorted(replayed))
        batch = _Batch(Evaluated(report))
        letters = list(result.dead_letters)
        for key, window in windows(result.parts, self.settings.trigger.evaluation_days):
            self._close_windows(key, window, batch)
            buffered = buffer(window, partitions)
            report.observations += buffered.observations
            for letter in buffered.dead_letters:
                self.metrics.observations_rejected.labels(reason=letter.reason).inc(letter.rows)
            letters.extend(buffered.dead_letters)
            for partition, changes in buffered.changed.items():
                state = partitions.owned[partition]
                if state.open_window is None or state.open_window < key:
                    state.open_window = key
                state.unevaluated.extend(changes)  # late data joins the open window
        done = partitions.finish_replays(result.positions, replayed)
        ready = self._caught_up_windows(done, caught_up)
        for partition in ready:
            partitions.owned[partition].unevaluated = []  # the window stays open
        self._evaluate(ready, batch)
        self._decide(batch)
        report.rejected = sum(letter.rows for letter in result.dead_letters)
        batch.out.dead_letters = [
            letter
            for letter in letters
            if not partitions.replaying(letter.topic, letter.partition, letter.offset)
        ]
        for partition in {part.partition for part in result.parts}:
            if partition in partitions.owned:
                store = partitions.store(partition)
                self.metrics.stars.labels(partition=str(partition)).set(len(store))
                self.metrics.state_bytes.labels(partition=str(partition)).set(store.nbytes())
        return batch.out

    def _caught_up_windows(self, partitions: set[int], caught_up: CaughtUp) -> dict[int, Changes]:
        """The unevaluated stars of those ``partitions`` that have read everything there is
        (``trigger.evaluate_when_caught_up``: evaluated without waiting for the window to
        close)."""
        if not self.settings.trigger.evaluate_when_caught_up:
            return {}
        return {
            p: state.unevaluated
            for p, state in self.partitions.owned.items()
            if p in partitions and state.unevaluated and caught_up(p)
        }

    def _close_windows(self, key: int, window: list[Part], batch: _Batch) -> None:
        """Rows of window ``key`` arrived: evaluate the earlier windows they close (one pass
        over every partition they close), replays apart."""
        closing: dict[int, Changes] = {}
        replayed: set[int] = set()
        for part in window:
            state = self.partitions.owned.get(part.partition)
            if state is None or state.open_window is None or state.open_window >= key:
                continue
            if self.partitions.replaying(part.topic, part.partition, part.offset):
                replayed.add(part.partition)
            closing[part.partition] = state.unevaluated
        for partition in closing:
            state = self.partitions.owned[partition]
            state.unevaluated, state.open_window = [], None
        for replay in (False, True):
            changed = {p: ids for p, ids in closing.items() if ids and (p in replayed) == replay}
            if changed:
                self._evaluate(changed, batch, replay=replay)

    def _evaluate(
        self, changed: dict[int, Changes], batch: _Batch, *, replay: bool = False
    ) -> None:
        """Trigger, vetting and LensNet selection for the stars one window changed (their
        store as of the window's end); the selected wait in ``batch.pending`` (dropped for a
        ``replay``: only the state the selection leaves is wanted)."""
        report, metrics = batch.out.report, self.metrics
        batch.out.partitions.update(changed)
        stores = {p: self.partitions.store(p) for p in changed}
        star_ids = {p: np.concatenate([ids for ids, _ in c]) for p, c in changed.items()}
        tested = {p: self.trigger.rising(stores[p], ids) for p, ids in star_ids.items()}
        passers = {p: outcome.passers for p, outcome in tested.items()}
        # The fit decides only for stars the model could still see (not alerted, not waiting
        # for their rescore): the others get the medians the fit would leave, unless vetting
        # could drop a star of the window, where every passer's verdict counts.
        vetting = could_drop(passers, stores, self.settings.vetting)
        if vetting:
            fit = {p: np.ones(len(ids), dtype=bool) for p, ids in passers.items()}
        else:
            fit = {p: self.scorer.open_to_model(stores[p], ids) for p, ids in passers.items()}
        rising: dict[int, Triggered] = {}
        for partition, outcome in tested.items():
            ids = passers[partition]
            rising[partition] = self.trigger.evaluate(stores[partition], ids[fit[partition]])
            self.trigger.refresh(stores[partition], ids[~fit[partition]])
            if replay:
                continue
            triggers = int(rising[partition].triggered.sum())
            report.stars_changed += outcome.evaluated
            report.rising += len(ids)
            report.unfitted += int((~fit[partition]).sum())
            report.triggered += triggers
            metrics.star_updates.inc(outcome.evaluated)
            metrics.rising.inc(len(ids))
            metrics.triggers.inc(triggers)
        keep = {p: np.ones(len(r.star_ids), dtype=bool) for p, r in rising.items()}
        dropped: dict[str, int] = {}
        if vetting:  # else it keeps every star: it would keep all the passers
            keep, dropped = vet_triggered(rising, stores, self.settings.vetting)
        for reason, count in dropped.items():
            metrics.vetting_drops.labels(reason=reason).inc(count)
            report.vetted_out += count
        for partition, triggered in rising.items():
            if not triggered.triggered.any():
                continue
            selection = self.scorer.select(
                stores[partition],
                triggered,
                keep[partition],
                partition=partition,
                arrival=functools.partial(last_arrival, changed[partition]),
            )
            if not replay:
                batch.pending.extend(selection.pending)
        if self.events is not None and not replay:
            waiting = {(p.partition, p.star_id) for p in batch.pending}
            for partition, ids in star_ids.items():
                batch.snapshots += self.events.watch(
                    partition,
                    stores[partition],
                    ids,
                    {star for p, star in waiting if p == partition},
                    self.partitions.owned[partition].events,
                )
        if len(batch.pending) >= self.settings.model.max_pending:
            self._decide(batch)

    def _decide(self, batch: _Batch) -> None:
        """Score the candidates selected so far in one batched pass; keep their alerts."""
        stores = {p: s.store for p, s in self.partitions.owned.items()}
        scoring = self.scorer.decide(stores, batch.pending)
        batch.pending = []
        batch.out.report.scored += scoring.scored
        batch.out.report.deferred += scoring.below_magnification
        self.metrics.candidates.inc(scoring.scored)
        self.metrics.deferred.inc(scoring.below_magnification)
        if scoring.scored:
            self.metrics.lensnet_seconds.observe(scoring.seconds)
        if self.events is None:
            batch.out.alerts.extend(scoring.alerts)
            return
        # The event model: each alert's fit and INITIAL update, then the followed stars'
        # snapshots, in window order (consumer.pipeline.event_model).
        owned = self.partitions.owned
        decided = self.events.decide(
            [alert for _, alert in scoring.alerts],
            batch.snapshots,
            alerted={
                p: _alerted(state.store, [s.star_id for s in batch.snapshots if s.partition == p])
                for p, state in owned.items()
            },
            ledgers={p: state.events for p, state in owned.items()},
            partition_of={alert.alert_id: item.partition for item, alert in scoring.alerts},
        )
        batch.snapshots = []
        batch.out.alerts.extend(
            (item, alert) for (item, _), alert in zip(scoring.alerts, decided.alerts, strict=True)
        )
        batch.out.events.extend(decided.updates)
        batch.out.report.refits += decided.refits
        batch.out.report.event_updates += len(decided.updates)


def _alerted(store: Any, stars: list[int]) -> dict[int, float]:
    """Alert HJD of those ``stars`` that alerted."""
    if not stars:
        return {}
    ids = np.unique(np.asarray(stars, dtype=np.int64))
    hjd = store.stars.alerted_hjd[store.stars.rows(ids)]
    return {s: h for s, h in zip(ids.tolist(), hjd.tolist(), strict=True) if math.isfinite(h)}


def windows(parts: list[Part], days: float) -> list[tuple[int, list[Part]]]:
    """The batch's messages by evaluation window (``floor(HJD / days)`` of a message's first
    row), ascending; each partition's messages keep their (merge) order, so a message whose
    window is earlier than its predecessor's (late data) stays where it is."""
    queues: dict[int, deque[Part]] = defaultdict(deque)
    for part in parts:
        queues[part.partition].append(part)
    out: list[tuple[int, list[Part]]] = []
    while queues:
        key = min(window_of(q[0], days) for q in queues.values())
        group = []
        for partition in list(queues):
            queue = queues[partition]
            while queue and window_of(queue[0], days) == key:
                group.append(queue.popleft())
            if not queue:
                del queues[partition]
        out.append((key, group))
    return out


def window_of(part: Part, days: float) -> int:
    """Evaluation window of a message: ``floor(HJD / days)`` of its first row."""
    return math.floor(float(part.observations.hjd.min()) / days)


def last_arrival(changes: Changes, star_ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """(S,) the Kafka timestamp (ms) of the last message in ``changes`` that changed each of
    ``star_ids``, -1 for none: when the data that completed the star's evaluation was made."""
    ids = np.concatenate([changed for changed, _ in changes])
    if len(ids) == 0:
        return np.full(len(star_ids), -1, dtype=np.int64)
    stamps = np.repeat([stamp for _, stamp in changes], [len(changed) for changed, _ in changes])
    order = np.argsort(ids, kind="stable")  # by star, then message order
    ids, stamps = ids[order], stamps[order]
    last = np.maximum(np.searchsorted(ids, star_ids, side="right") - 1, 0)
    return np.where(ids[last] == star_ids, stamps[last], -1).astype(np.int64)
