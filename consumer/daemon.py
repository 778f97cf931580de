"""``lensnet run``: the main loop. It wires the stages together and owns nothing else.

consume a batch -> :func:`~consumer.pipeline.ingest.ingest` (decode, check, clean; dead letters) ->
:meth:`StarStore.append <consumer.state.store.StarStore.append>` per message -> per partition
:class:`~consumer.pipeline.trigger.TriggerStage` (rising test, then the fit) -> across the
batch :func:`~consumer.pipeline.vetting.vet` -> :class:`~consumer.pipeline.scoring.Scorer`
(LensNet in batches) -> :class:`~consumer.edge.output.Output` (alerts, dead letters and the
consumed offsets, in one transaction by default).

Around the loop: partition ownership (:mod:`consumer.state.partitions`: restore and replay on
assign, checkpoint on revoke, rewind after an aborted transaction), the HTTP probes and metrics
(:mod:`consumer.health`), signals (SIGTERM/SIGINT: finish the batch, commit, checkpoint, exit
0 within ``daemon.drain_timeout_s``; a second signal exits at once with 130), and retried
start-up work (broker, topics, model file).
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from consumer.edge.kafka import consumer_config, make_admin, make_consumer, watermarks
from consumer.edge.output import TransactionAbortedError, TransactionalOutput, make_output
from consumer.edge.photometry import Observations, PhotometryBatch, PhotometryDecoder, encode_batch
from consumer.edge.topics import check_copartitioning
from consumer.exceptions import KafkaClientError, LensNetError
from consumer.health import Health, HealthServer, Metrics
from consumer.pipeline.align import Aligner
from consumer.pipeline.ingest import DeadLetter, IngestResult, Part, ingest, sites_by_topic
from consumer.pipeline.scoring import Pending, Scorer
from consumer.pipeline.trigger import Triggered, TriggerStage
from consumer.pipeline.vetting import vet
from consumer.settings import Settings
from consumer.state.alerted import published_alerts
from consumer.state.partitions import Partitions

log = structlog.get_logger("lensnet.daemon")

#: Candidates selected before the model runs on them (bounds memory: ~150 KB each at most).
MAX_PENDING = 512


@dataclass
class BatchReport:
    """Counts of one batch, logged as its canonical line."""

    messages: int = 0
    observations: int = 0
    rejected: int = 0
    dead_letters: int = 0
    stars_changed: int = 0
    rising: int = 0
    triggered: int = 0
    vetted_out: int = 0
    scored: int = 0
    alerts: int = 0
    replayed_partitions: list[int] = field(default_factory=list)


class Daemon:
    """The long-running consumer. ``Daemon(settings).run()`` returns the exit code."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = log.bind(instance=settings.daemon.instance_id)
        self.metrics = Metrics()
        self.health = Health()
        self.topics = settings.topics.photometry_topics()
        self.partitions = Partitions(settings.state, self.topics, settings.trigger.evaluation_days)
        self.aligner = Aligner(self.topics, settings.consumer.max_held_messages)
        self.decoder = PhotometryDecoder()
        self.site_of_topic = sites_by_topic(self.topics)
        self.trigger = TriggerStage(settings.trigger)
        self.scorer: Scorer | None = None
        self.consumer: Consumer | None = None
        self.output: Any = None
        self.server: HealthServer | None = None
        self.n_partitions = settings.topics.partitions
        self.stopping = threading.Event()
        self.alerts_published = 0
        self._last_checkpoint = time.monotonic()
        self._last_lag = 0.0
        self._signals = 0
        self._pending: list[Pending] = []
        #: False while a batch is between its first state change and its commit.
        self._consistent = True
        #: Partitions the current batch evaluated (their stores hold its decisions).
        self._evaluated: set[int] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self) -> int:
        """Start, loop until stopped (signal, or drained with ``stop_at_end``), shut down."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.start()
            while not self.stopping.is_set():
                self.step()
        finally:
            self.shutdown()
        return 0

    def start(self) -> None:
        """Health server, model, broker checks, producer and consumer (retried start-up)."""
        daemon = self.settings.daemon
        if daemon.http_port >= 0:
            self.server = HealthServer(
                daemon.http_host,
                daemon.http_port,
                self.health,
                self.metrics,
                daemon.health_max_silence_s,
            )
            self.server.start()
        self.scorer = self._retrying("load the model", lambda: Scorer(self.settings.model))
        self.n_partitions = self._retrying("check the photometry topics", self._check_topics)
        config = consumer_config(self.settings.kafka, self.settings.consumer)
        if daemon.static_membership:
            config["group.instance.id"] = f"{self.settings.consumer.group_id}-{daemon.instance_id}"
        self.consumer = make_consumer(config)
        self.output = self._retrying(
            "start the producer", lambda: make_output(self.settings, self.consumer)
        )
        self.consumer.subscribe(
            list(self.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.log.info(
            "started",
            mode=daemon.mode,
            group=self.settings.consumer.group_id,
            topics=list(self.topics),
            partitions=self.n_partitions,
            model=self.scorer.model_version,
            http_port=self.server.port if self.server else None,
            transactional_id=getattr(self.output, "transactional_id", None),
        )

    def step(self) -> None:
        """One iteration: consume a batch and process it, or do idle work."""
        assert self.consumer is not None
        consumer = self.settings.consumer
        messages = self.consumer.consume(consumer.batch_messages, consumer.poll_timeout_s)
        self.health.beat()
        self.metrics.last_progress.set_to_current_time()
        good = [m for m in messages if self._usable(m)]
        ready = IngestResult()
        if good:
            decoded = ingest(good, self.decoder, self.site_of_topic, self.n_partitions)
            for site, count in decoded.observations.items():
                self.metrics.observations.labels(site=site).inc(count)
            for reason, count in decoded.rejected.items():
                self.metrics.observations_rejected.labels(reason=reason).inc(count)
            ready = self.aligner.add(good, decoded)
        ready.merge(self.aligner.release(self._high))
        self._flow()
        if ready.messages or self._windows_due():
            self.process(ready)
        else:
            self._idle()
        if time.monotonic() - self._last_checkpoint > self.settings.state.checkpoint_interval_s:
            self.checkpoint_all()

    def shutdown(self) -> None:
        """Checkpoint what is owned, leave the group, flush; bounded by the drain timeout."""
        timer = threading.Timer(self.settings.daemon.drain_timeout_s, self._drain_overrun)
        timer.daemon = True
        timer.start()
        try:
            if self.consumer is not None:
                if self._consistent:  # never checkpoint the state of a failed batch
                    self.checkpoint_all()
                for partition in list(self.partitions.owned):
                    self.partitions.drop(partition)
                self._quietly("close the consumer", self.consumer.close)
                self.consumer = None
            if self.output is not None:
                self._quietly("flush the producer", self.output.close, 5.0)
                self.output = None
            if self.server is not None:
                self.server.stop()
            self.log.info("stopped", alerts_published=self.alerts_published)
        finally:
            timer.cancel()

    def _quietly(self, what: str, function: Any, *args: Any) -> None:
        """Shut-down steps after a failure must not hide it (or its exit code)."""
        try:
            function(*args)
        except Exception as error:  # librdkafka raises KafkaException after fatal errors
            self.log.warning(f"cannot {what} cleanly", error=str(error))

    def stop(self) -> None:
        """Ask the loop to finish its batch and exit (thread-safe)."""
        self.stopping.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            os._exit(130)
        self.log.info("signal received, draining", signal=signal.Signals(signum).name)
        self.stop()

    def _drain_overrun(self) -> None:
        self.log.error("drain took longer than daemon.drain_timeout_s, exiting")
        os._exit(1)

    def _retrying(self, what: str, function: Any) -> Any:
        def retryable(error: BaseException) -> bool:
            if isinstance(error, KafkaClientError):
                return error.retriable
            return isinstance(error, OSError | RuntimeError)

        def before_sleep(state: RetryCallState) -> None:
            outcome = state.outcome
            error = outcome.exception() if outcome else None
            self.log.warning(
                f"cannot {what} yet, retrying", attempt=state.attempt_number, error=str(error)
            )

        retrying = Retrying(
            retry=retry_if_exception(retryable),
            stop=stop_after_attempt(self.settings.daemon.startup_attempts),
            wait=wait_exponential(multiplier=0.5, max=10.0),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(function)

    def _check_topics(self) -> int:
        admin = make_admin(self.settings.kafka)
        return check_copartitioning(admin, self.settings.topics)

    # -- rebalance callbacks ---------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        starts = self._open(consumer, sorted({tp.partition for tp in assigned}))
        for tp in assigned:
            tp.offset = starts.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        consumer.assign(assigned)
        self._update_ready()

    def _open(self, consumer: Consumer, partitions: list[int]) -> dict[tuple[str, int], int]:
        """Own ``partitions``: restore or rebuild each store, with the stars that already
        alerted; returns where to start consuming each (topic, partition)."""
        committed = consumer.committed(
            [TopicPartition(t, p) for p in partitions for t in self.topics], timeout=30
        )
        committed_by = {(tp.topic, tp.partition): tp.offset for tp in committed}
        published = self._published(partitions)
        starts: dict[tuple[str, int], int] = {}
        for partition in partitions:
            beginning = {
                t: watermarks(consumer, TopicPartition(t, partition))[0] for t in self.topics
            }
            state, start = self.partitions.open(
                partition,
                {t: committed_by.get((t, partition), -1) for t in self.topics},
                beginning,
                published[partition],
            )
            starts.update({(t, partition): offset for t, offset in start.items()})
            self.aligner.open(partition, start)
            self.log.info(
                "partition opened",
                partition=partition,
                source=state.source,
                stars=len(state.store),
                alerted=len(state.alerted),
                start=start,
                replay_until=state.targets,
                note=state.note or None,
            )
        return starts

    def _on_revoke(self, _consumer: Consumer, revoked: list[TopicPartition]) -> None:
        for partition in sorted({tp.partition for tp in revoked}):
            self._let_go(partition)
            if partition in self.partitions.owned:
                self._checkpoint(partition)
                self.partitions.drop(partition)
                self.log.info("partition revoked", partition=partition)
        self._update_ready()

    def _on_lost(self, _consumer: Consumer, lost: list[TopicPartition]) -> None:
        for partition in sorted({tp.partition for tp in lost}):
            self._let_go(partition)
            self.partitions.drop(partition)
            self.log.warning(
                "partition lost (no checkpoint, nothing committed)", partition=partition
            )
        self._update_ready()

    def _let_go(self, partition: int) -> None:
        """Forget the messages held for ``partition`` and resume what was paused (a pause
        would outlive the assignment)."""
        paused = self.aligner.drop(partition)
        if paused and self.consumer is not None:
            self._quietly(
                "resume partitions",
                self.consumer.resume,
                [TopicPartition(t, p) for t, p in paused],
            )

    def _high(self, topic: str, partition: int) -> int:
        """High watermark of the consumer's last fetch response (negative: none yet)."""
        assert self.consumer is not None
        return int(
            self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)[1]
        )

    def _flow(self) -> None:
        """Pause topic-partitions the aligner holds too much of; resume drained ones."""
        assert self.consumer is not None
        pause, resume = self.aligner.flow()
        if pause:
            self.consumer.pause([TopicPartition(t, p) for t, p in pause])
        if resume:
            self.consumer.resume([TopicPartition(t, p) for t, p in resume])

    def _windows_due(self) -> bool:
        """A restored partition has an unevaluated window and all of its data is in."""
        restored = {p for p, state in self.partitions.owned.items() if state.restored}
        return bool(self._caught_up_windows(restored))

    def _caught_up_windows(self, partitions: set[int]) -> dict[int, list[Any]]:
        """The unevaluated stars of those ``partitions`` that have read everything there is
        (``trigger.evaluate_when_caught_up``: evaluated without waiting for the window to
        close)."""
        if not self.settings.trigger.evaluate_when_caught_up:
            return {}
        return {
            p: state.unevaluated
            for p, state in self.partitions.owned.items()
            if p in partitions and state.unevaluated and self.aligner.caught_up(p, self._high)
        }

    def _update_ready(self) -> None:
        if self.partitions.ready:
            self.health.set_ready(True)
        elif not self.partitions.owned:
            self.health.set_ready(False, "no partitions assigned")
        else:
            pending = sorted(p for p, s in self.partitions.owned.items() if not s.restored)
            self.health.set_ready(False, f"replaying partitions {pending}")

    # -- the batch -------------------------------------------------------------------------------

    def process(self, result: IngestResult) -> BatchReport:
        """Process one batch of decoded photometry messages (in the aligner's order) inside
        one output transaction."""
        started = time.perf_counter()
        # Partitions with input already processed and committed in this batch make no alerts
        # (their decisions were published, or not, the first time).
        sources = [(i.topic, i.partition, i.offset) for i in result.parts] + [
            (i.topic, i.partition, i.offset) for i in result.dead_letters
        ]
        replayed = {p for t, p, o in sources if self.partitions.replaying(t, p, o)}
        self.output.begin()
        self._consistent = False
        try:
            self._evaluated = set()
            report = self._stages(result, replayed)
            offsets = [
                TopicPartition(topic, partition, offset)
                for (topic, partition), offset in sorted(result.positions.items())
                if partition in self.partitions.owned
                and offset >= self.partitions.owned[partition].targets[topic]
            ]
            assert self.consumer is not None
            self.output.commit(offsets, self.consumer.consumer_group_metadata())
        except TransactionAbortedError as error:
            self.metrics.transactions.labels(outcome="aborted").inc()
            self.log.warning("transaction aborted, rewinding", error=str(error))
            # Every partition whose state the batch changed: its messages, and windows it
            # evaluated without messages (caught up) whose selections and alert marks the
            # abort voids.
            self.rewind(sorted({p for _, p in result.positions} | self._evaluated))
            self._consistent = True
            return BatchReport()
        except BaseException:
            if isinstance(self.output, TransactionalOutput):
                try:
                    self.output.abort()
                except LensNetError:
                    self.log.exception("abort failed")
            raise
        self._consistent = True
        self.metrics.transactions.labels(outcome="committed").inc()
        for key, offset in result.positions.items():
            if key[1] in self.partitions.owned:
                self.partitions.positions[key] = offset
        for partition in {p for _, p in result.positions}:
            if partition in self.partitions.owned and self.partitions.update_restored(partition):
                state = self.partitions.owned[partition]
                seconds = (state.restored_at or 0.0) - state.opened_at
                self.metrics.restore_seconds.observe(seconds)
                self.log.info("partition restored", partition=partition, seconds=round(seconds, 3))
        self._update_ready()
        elapsed = time.perf_counter() - started
        self.metrics.batches.inc()
        self.metrics.batch_seconds.observe(elapsed)
        self.log.info("batch", ms=round(1000 * elapsed, 1), **report.__dict__)
        return report

    def _stages(self, result: IngestResult, replayed: set[int]) -> BatchReport:
        """Everything between decoding and output, for one batch."""
        assert self.scorer is not None
        report = BatchReport(messages=result.messages, replayed_partitions=sorted(replayed))
        letters = list(result.dead_letters)
        newest: dict[int, int] = {}
        for part in result.parts:
            newest[part.partition] = max(newest.get(part.partition, -1), part.timestamp_ms)
        for key, window in _windows(result.parts, self.settings.trigger.evaluation_days):
            self._close_windows(key, window, newest, report)
            changed: dict[int, list[Any]] = defaultdict(list)
            for part in window:
                if part.partition not in self.partitions.owned:
                    continue
                observations = part.observations
                store = self.partitions.store(part.partition)
                appended = store.append(part.site, observations)
                changed[part.partition].append(appended.changed)
                report.observations += len(observations)
                for rows, reason in (
                    (appended.rejected_rows, "rejected_by_state"),
                    (appended.refused_rows, "state_full"),
                ):
                    if len(rows):
                        letters.append(_state_letter(part, observations, rows, reason))
                        self.metrics.observations_rejected.labels(reason=reason).inc(len(rows))
            for partition, ids in changed.items():
                self.partitions.mark_alerted(partition, ids)
                state = self.partitions.owned[partition]
                if state.open_window is None or state.open_window < key:
                    state.open_window = key
                state.unevaluated.extend(ids)  # late data joins the open window
        done = self._finish_replays(result, replayed)
        caught_up = self._caught_up_windows(done)
        for state in (self.partitions.owned[p] for p in caught_up):
            state.unevaluated = []  # the window stays open: newer rows re-evaluate the star
        self._evaluate(caught_up, newest, report)
        self._decide(report)
        report.rejected = sum(letter.rows for letter in result.dead_letters)
        for letter in letters:
            if self.partitions.replaying(letter.topic, letter.partition, letter.offset):
                continue  # dead-lettered when it was first processed
            self.output.dead_letter(letter)
            report.dead_letters += 1
            self.metrics.dead_letters.labels(reason=letter.reason).inc()
        for partition in {part.partition for part in result.parts}:
            if partition in self.partitions.owned:
                store = self.partitions.store(partition)
                self.metrics.stars.labels(partition=str(partition)).set(len(store))
                self.metrics.state_bytes.labels(partition=str(partition)).set(store.nbytes())
        return report

    def _finish_replays(self, result: IngestResult, replayed: set[int]) -> set[int]:
        """Owned partitions whose replay is complete once this batch commits; those it
        completes get their committed alerts marked."""
        done = set()
        for partition, state in self.partitions.owned.items():
            reached = state.restored or all(
                max(
                    self.partitions.positions[(t, partition)],
                    result.positions.get((t, partition), -1),
                )
                >= state.targets[t]
                for t in self.topics
            )
            if reached:
                done.add(partition)
                if partition in replayed:
                    self.partitions.apply_alerted(partition)
        return done

    def _close_windows(
        self,
        key: int,
        window: list[Part],
        newest: dict[int, int],
        report: BatchReport,
    ) -> None:
        """Rows of window ``key`` arrived: evaluate the earlier windows they close (one pass
        over every partition they close). Where the closing rows are a replay, whoever
        committed them decided already: the trigger and the selection run again, for the
        state they keep (cached medians, when each star was last scored), but not the model."""
        closing: dict[int, list[Any]] = {}
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
                self._evaluate(changed, newest, report, replay=replay)

    def _evaluate(
        self,
        changed: dict[int, list[Any]],
        newest: dict[int, int],
        report: BatchReport,
        *,
        replay: bool = False,
    ) -> None:
        """Trigger, vetting and LensNet selection for the stars one window changed (their
        store as of the window's end); the selected wait in ``_pending`` for :meth:`_decide`
        (dropped for a ``replay``: only the state the selection leaves is wanted)."""
        assert self.scorer is not None
        evaluations: dict[int, Triggered] = {}
        self._evaluated.update(changed)
        for partition, ids in changed.items():
            store = self.partitions.store(partition)
            outcome = self.trigger.run(store, np.concatenate(ids))
            evaluations[partition] = outcome.rising
            if replay:
                continue
            report.stars_changed += outcome.evaluated
            report.rising += len(outcome.rising.star_ids)
            report.triggered += int(outcome.rising.triggered.sum())
            self.metrics.star_updates.inc(outcome.evaluated)
            self.metrics.rising.inc(len(outcome.rising.star_ids))
            self.metrics.triggers.inc(int(outcome.rising.triggered.sum()))
        keep = self._vet(evaluations, report)
        for partition, rising in evaluations.items():
            if not rising.triggered.any():
                continue
            selection = self.scorer.select(
                self.partitions.store(partition),
                rising,
                keep[partition],
                partition=partition,
                newest_ms=newest.get(partition, -1),
            )
            if not replay:
                self._pending.extend(selection.pending)
        if len(self._pending) >= MAX_PENDING:
            self._decide(report)

    def _decide(self, report: BatchReport) -> None:
        """Score the candidates selected so far in one batched pass; publish their alerts."""
        assert self.scorer is not None
        stores = {p: s.store for p, s in self.partitions.owned.items()}
        scoring = self.scorer.decide(stores, self._pending)
        self._pending = []
        report.scored += scoring.scored
        self.metrics.candidates.inc(scoring.scored)
        if scoring.scored:
            self.metrics.lensnet_seconds.observe(scoring.seconds)
        for item, alert in scoring.alerts:
            self.output.alert(alert)
            report.alerts += 1
            self.alerts_published += 1
            self.metrics.alerts.labels(label=alert.lensnet.label).inc()
            if item.newest_ms > 0:
                self.metrics.alert_latency.observe(time.time() - item.newest_ms / 1000)
            self.log.info(
                "alert",
                alert_id=alert.alert_id,
                star_id=alert.star_id,
                field=alert.field,
                sites=list(alert.alertfinder.sites),
                dchi2=round(alert.alertfinder.dchi2, 1),
                p_event=round(alert.lensnet.p_event, 4),
                label=alert.lensnet.label,
            )

    def _vet(self, evaluations: dict[int, Triggered], report: BatchReport) -> dict[int, Any]:
        """Vet the batch's triggered stars of every owned partition together."""
        keep = {p: np.ones(len(r.star_ids), dtype=bool) for p, r in evaluations.items()}
        rows = [
            (p, i) for p, r in evaluations.items() for i in np.flatnonzero(r.triggered).tolist()
        ]
        if not rows:
            return keep
        columns: dict[str, list[Any]] = defaultdict(list)
        for partition, index in rows:
            store = self.partitions.store(partition)
            star = [int(evaluations[partition].star_ids[index])]
            columns["star_id"].append(star[0])
            columns["field"].append(int(store.field_tags(star)[0, 0]))
            row = store.stars.row(star[0])
            columns["chip"].append(store.stars.chip[row])
            columns["x"].append(store.stars.x[row])
            columns["y"].append(store.stars.y[row])
        verdict = vet(
            columns["star_id"],
            columns["field"],
            columns["chip"],
            columns["x"],
            columns["y"],
            self.settings.vetting,
        )
        for (partition, index), kept in zip(rows, verdict.keep.tolist(), strict=True):
            keep[partition][index] = kept
        for reason, count in verdict.counts().items():
            self.metrics.vetting_drops.labels(reason=reason).inc(count)
            report.vetted_out += count
        return keep

    # -- recovery and housekeeping -----------------------------------------------------------------

    def rewind(self, partitions: list[int]) -> None:
        """After an aborted transaction: restore each partition from its checkpoint (or
        rebuild it) and seek its input back, replaying up to the committed offsets."""
        assert self.consumer is not None
        owned = [p for p in partitions if p in self.partitions.owned]
        for partition in owned:
            self._let_go(partition)
            self.partitions.drop(partition)
        for (topic, partition), offset in self._open(self.consumer, owned).items():
            self.consumer.seek(TopicPartition(topic, partition, offset))
        self._update_ready()

    def _published(self, partitions: list[int]) -> dict[int, dict[int, float]]:
        """Stars of these partitions with a committed alert (the alert-once rule's truth);
        retried while the broker is unreachable (e.g. restarting)."""
        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, KafkaClientError) and e.retriable),
            stop=stop_after_delay(self.settings.daemon.transaction_timeout_ms / 1000),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            reraise=True,
        )
        return retrying(
            published_alerts,
            self.settings.kafka,
            self.settings.topics.alerts,
            self.n_partitions,
            partitions,
        )

    def checkpoint_all(self) -> None:
        """Checkpoint every owned partition (their stores match the committed offsets)."""
        for partition in list(self.partitions.owned):
            self._checkpoint(partition)
        self._last_checkpoint = time.monotonic()

    def _checkpoint(self, partition: int) -> None:
        started = time.perf_counter()
        path = self.partitions.checkpoint(partition)
        self.metrics.checkpoints.inc()
        self.log.info(
            "checkpoint",
            partition=partition,
            path=str(path),
            stars=len(self.partitions.store(partition)),
            ms=round(1000 * (time.perf_counter() - started), 1),
        )

    def _usable(self, message: Any) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() == KafkaError._PARTITION_EOF:
            return False
        if error.fatal():
            raise KafkaClientError.wrap("consumer failed (fatal)", error)
        self.log.warning("consumer error", error=error.str(), code=error.name())
        return False

    def _idle(self) -> None:
        """No messages: refresh lag metrics; stop when drained and ``stop_at_end``."""
        assert self.consumer is not None
        now = time.monotonic()
        stop_at_end = self.settings.daemon.stop_at_end
        if not stop_at_end and now - self._last_lag < 10.0:
            return
        self._last_lag = now
        if not self.partitions.owned:
            return
        drained = True
        for (topic, partition), position in list(self.partitions.positions.items()):
            # The high watermark of the last fetch response: a fresh ListOffsets request
            # would queue behind the fetch long-poll on the same connection (~0.5 s each).
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            if high < 0:  # no fetch response yet
                drained = False
                continue
            lag = max(high - position, 0)
            self.metrics.lag.labels(topic=topic, partition=str(partition)).set(lag)
            drained &= lag == 0
        if stop_at_end and drained and self.partitions.ready:
            self.log.info("input drained, stopping (daemon.stop_at_end)")
            self.stop()


def _windows(parts: list[Part], days: float) -> list[tuple[int, list[Part]]]:
    """The batch's messages by evaluation window (``floor(HJD / days)`` of a message's first
    row), ascending; each partition's messages keep their (merge) order, so a message whose
    window is earlier than its predecessor's (late data) stays where it is."""
    queues: dict[int, deque[Part]] = defaultdict(deque)
    for part in parts:
        queues[part.partition].append(part)
    out: list[tuple[int, list[Part]]] = []
    while queues:
        key = min(_window(q[0], days) for q in queues.values())
        group = []
        for partition in list(queues):
            queue = queues[partition]
            while queue and _window(queue[0], days) == key:
                group.append(queue.popleft())
            if not queue:
                del queues[partition]
        out.append((key, group))
    return out


def _window(part: Part, days: float) -> int:
    return math.floor(float(part.observations.hjd.min()) / days)


def _state_letter(part: Part, observations: Observations, rows: Any, reason: str) -> DeadLetter:
    """Dead letter for rows the store would not take (a third field tag, or no room)."""
    detail = {
        "rejected_by_state": "a third field tag for the star (at most two are kept)",
        "state_full": "new star past state.max_stars_per_partition",
    }[reason]
    value = encode_batch(PhotometryBatch(part.site, observations.take(rows), "dlq"))
    return DeadLetter(value, reason, detail, part.topic, part.partition, part.offset, len(rows))
