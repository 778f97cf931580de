"""``lensnet run``: the main loop. It wires the stages together and owns nothing else.

consume a batch (:class:`~consumer.edge.feed.Feed`: the consumer, its watermarks and pauses)
-> :func:`~consumer.pipeline.ingest.ingest` (decode, check, clean; dead letters) ->
:class:`~consumer.pipeline.align.Aligner` (each partition's three site topics in observation
order) -> :class:`~consumer.pipeline.windows.WindowStage` (buffer into the star stores;
trigger, vetting and LensNet on every evaluation window that closes; the event model) -> its
alerts, event updates and dead letters (:func:`~consumer.edge.output.publish`), and the
consumed offsets, out through :class:`~consumer.edge.output.Output`, one
:func:`~consumer.edge.output.transaction` per batch by default.

At the edges of a batch: partition ownership (:class:`~consumer.state.partitions.Partitions`:
restore and replay on assign, checkpoint on revoke, rewind after an aborted transaction).
Around the loop: the HTTP probes and metrics (:mod:`consumer.health`), signals (SIGTERM/SIGINT:
finish the batch, commit, checkpoint, exit 0 within ``daemon.drain_timeout_s``; a second signal
exits at once with 130), and retried start-up work (broker, topics, model file, and every
compiled kernel run once: :func:`~consumer.pipeline.warmup.warm_up`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import structlog
from confluent_kafka import Consumer, TopicPartition
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential,
)

from consumer.edge.feed import Feed
from consumer.edge.kafka import consumer_config, make_admin, make_consumer
from consumer.edge.output import TransactionAbortedError, make_output, publish, transaction
from consumer.edge.photometry import PhotometryDecoder
from consumer.edge.reach import reach
from consumer.edge.topics import check_copartitioning
from consumer.exceptions import LensNetError
from consumer.health import BatchClock, Health, HealthServer, Metrics
from consumer.pipeline.align import Aligner
from consumer.pipeline.ingest import IngestResult, ingest, sites_by_topic
from consumer.pipeline.scoring import Scorer
from consumer.pipeline.trigger import untrained_rules
from consumer.pipeline.warmup import warm_up
from consumer.pipeline.windows import BatchReport, Evaluated, WindowStage
from consumer.settings import Settings
from consumer.signals import exit_after, stop_on_signals
from consumer.state.alerted import PublishedAlerts
from consumer.state.events import PublishedEvents
from consumer.state.partitions import Partitions

log = structlog.get_logger("lensnet.daemon")


class Daemon:
    """The long-running consumer. ``Daemon(settings).run()`` returns the exit code."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = log.bind(instance=settings.daemon.instance_id)
        self.metrics = Metrics()
        self.health = Health()
        self.topics = settings.topics.photometry_topics()
        self.partitions = owned_partitions(settings, self.topics, self.log)
        self.aligner = Aligner(self.topics, settings.consumer.max_held_messages)
        self.decoder = PhotometryDecoder()
        self.site_of_topic = sites_by_topic(self.topics)
        self.scorer: Scorer | None = None
        self.windows: WindowStage | None = None
        self.feed: Feed | None = None
        self.output: Any = None
        self.server: HealthServer | None = None
        self.n_partitions = settings.topics.partitions
        self.stopping = threading.Event()
        self.alerts_published = 0
        self._last_checkpoint = time.monotonic()
        self._last_lag = 0.0
        #: False while a batch is between its first state change and its commit.
        self._consistent = True

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self) -> int:
        """Start, loop until stopped (signal, or drained with ``stop_at_end``), shut down."""
        interrupted = False
        with stop_on_signals(self.stop) as received:
            try:
                self.start()
                while not self.stopping.is_set():
                    self.step()
            except StartupInterruptedError:
                interrupted = True
            finally:
                if received.signal is not None:  # logged here, never in the handler
                    self.log.info("signal received, draining", signal=received.signal)
                if interrupted:
                    self.log.info("stopped during start-up")
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
        self.metrics.model.labels(version=self.scorer.model_version).set(1)
        if differences := untrained_rules(self.settings.trigger, self.scorer.card):
            self.log.warning("trigger rules differ from the model's training", **differences)
        warm_up(self.settings, self.scorer)
        self.windows = WindowStage(self.settings, self.partitions, self.scorer, self.metrics)
        self._retrying("reach Kafka", lambda: reach(self.settings.kafka, stop=self.stopping))
        self.n_partitions = self._retrying(
            "check the photometry topics",
            lambda: check_copartitioning(make_admin(self.settings.kafka), self.settings.topics),
        )
        static = daemon.instance_id if daemon.static_membership else None
        consumer = make_consumer(
            consumer_config(self.settings.kafka, self.settings.consumer, instance_id=static)
        )
        self.feed = Feed(consumer, self.aligner, self.log)
        self.output = self._retrying(
            "start the producer", lambda: make_output(self.settings, consumer)
        )
        consumer.subscribe(
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
        assert self.feed is not None
        assert self.windows is not None
        consumer = self.settings.consumer
        good = self.feed.consume(consumer.batch_messages, consumer.poll_timeout_s)
        self.health.beat()
        self.metrics.last_progress.set_to_current_time()
        ready = IngestResult()
        if good:
            decoded = ingest(good, self.decoder, self.site_of_topic, self.n_partitions)
            for site, count in decoded.observations.items():
                self.metrics.observations.labels(site=site).inc(count)
            for reason, count in decoded.rejected.items():
                self.metrics.observations_rejected.labels(reason=reason).inc(count)
            ready = self.aligner.add(good, decoded)
        self.aligner.advance(self.feed.positions())
        ready.merge(self.aligner.release(self.feed.high))
        self.feed.flow()
        if ready.messages or ready.positions or self.windows.due(self.feed.caught_up):
            self.process(ready)
        else:
            self._idle()
        state = self.settings.state
        if time.monotonic() - self._last_checkpoint > state.checkpoint_interval_s:
            self.checkpoint_all()
        elif self._consistent:
            for partition in self.partitions.due_for_checkpoint(state.checkpoint_rows):
                self.partitions.checkpoint(partition)
                self.metrics.checkpoints.inc()

    def shutdown(self) -> None:
        """Checkpoint what is owned, leave the group, flush; bounded by the drain timeout."""
        overrun = "drain took longer than daemon.drain_timeout_s, exiting"
        with exit_after(self.settings.daemon.drain_timeout_s, self.log, overrun):
            if self.feed is not None:
                if self._consistent:  # never checkpoint the state of a failed batch
                    self.checkpoint_all()
                for partition in list(self.partitions.owned):
                    self.partitions.drop(partition)
                quietly(self.log, "close the consumer", self.feed.consumer.close)
                self.feed = None
            if self.output is not None:
                quietly(self.log, "flush the producer", self.output.close, 5.0)
                self.output = None
            if self.server is not None:
                self.server.stop()
            self.log.info("stopped", alerts_published=self.alerts_published)

    def stop(self) -> None:
        """Ask the loop to finish its batch and exit (thread-safe)."""
        self.stopping.set()

    def _retrying(self, what: str, function: Callable[[], Any]) -> Any:
        return retrying(
            what, function, self.settings.daemon.startup_attempts, self.log, self.stopping
        )

    # -- partitions: rebalance callbacks -------------------------------------------------------

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        assert self.feed is not None
        partitions = sorted({tp.partition for tp in assigned})
        starts = self.partitions.assign(
            consumer, partitions, self.n_partitions, self._end_pending(consumer)
        )
        self.feed.assign(assigned, starts)
        self._update_ready()

    def _on_revoke(self, _consumer: Consumer, revoked: list[TopicPartition]) -> None:
        assert self.feed is not None
        for partition in sorted({tp.partition for tp in revoked}):
            self.feed.let_go(partition)
            if self.partitions.revoke(partition):
                self.metrics.checkpoints.inc()
        self._update_ready()

    def _on_lost(self, _consumer: Consumer, lost: list[TopicPartition]) -> None:
        assert self.feed is not None
        for partition in sorted({tp.partition for tp in lost}):
            self.feed.let_go(partition)
            self.partitions.lose(partition)
        self._update_ready()

    def _update_ready(self) -> None:
        self.health.set_ready(*self.partitions.readiness())

    def _end_pending(self, consumer: Consumer) -> Callable[[list[TopicPartition]], None]:
        return partial(end_pending_offsets, self.output, consumer, self.log)

    # -- the batch -------------------------------------------------------------------------------

    def process(self, result: IngestResult) -> BatchReport:
        """Process one batch of decoded photometry messages (in the aligner's order) inside
        one output transaction."""
        assert self.feed is not None
        assert self.windows is not None
        clock = BatchClock()
        self._consistent = False
        evaluated: Evaluated | None = None
        try:
            with transaction(self.output, self.log):
                evaluated = self.windows.run(result, self.feed.caught_up)
                self.alerts_published += publish(self.output, evaluated, self.metrics, self.log)
                offsets = self.partitions.offsets_to_commit(result.positions)
                self.output.commit(offsets, self.feed.consumer.consumer_group_metadata())
        except TransactionAbortedError as error:
            self.metrics.transactions.labels(outcome="aborted").inc()
            self.log.warning("transaction aborted, rewinding", error=str(error))
            # Every partition whose state the batch changed: its messages, and windows it
            # evaluated without messages (caught up) whose selections and alert marks the
            # abort voids.
            changed = {p for _, p in result.positions}
            self.rewind(sorted(changed | (evaluated.partitions if evaluated else set())))
            self._consistent = True
            return BatchReport()
        self._consistent = True
        self.metrics.transactions.labels(outcome="committed").inc()
        for state in self.partitions.committed(result.positions, result.rows_by_partition()):
            self.metrics.restore_seconds.observe((state.restored_at or 0.0) - state.opened_at)
        self._update_ready()
        self.log.info("batch", **self.metrics.batch_done(clock), **evaluated.report.__dict__)
        return evaluated.report

    # -- recovery and housekeeping -----------------------------------------------------------------

    def rewind(self, partitions: list[int]) -> None:
        """After an aborted transaction: restore each partition from its checkpoint (or
        rebuild it) and seek its input back, replaying up to the committed offsets."""
        assert self.feed is not None
        for partition in partitions:
            if partition in self.partitions.owned:
                self.feed.let_go(partition)
        consumer = self.feed.consumer
        starts = self.partitions.rewind(
            consumer, partitions, self.n_partitions, self._end_pending(consumer)
        )
        self.feed.open(starts)
        self._update_ready()

    def checkpoint_all(self) -> None:
        """Checkpoint every owned partition (their stores match the committed offsets)."""
        for partition in list(self.partitions.owned):
            self.partitions.checkpoint(partition)
            self.metrics.checkpoints.inc()
        self._last_checkpoint = time.monotonic()

    def _idle(self) -> None:
        """No messages: refresh lag metrics; stop when drained and ``stop_at_end``."""
        assert self.feed is not None
        now = time.monotonic()
        stop_at_end = self.settings.daemon.stop_at_end
        if not stop_at_end and now - self._last_lag < 10.0:
            return
        self._last_lag = now
        if not self.partitions.owned:
            return
        lags = self.partitions.lag(self.feed.high)
        self.metrics.record_lag(lags)
        drained = all(lag == 0 for lag in lags.values())
        if stop_at_end and drained and self.partitions.ready:
            self.log.info("input drained, stopping (daemon.stop_at_end)")
            self.stop()


def owned_partitions(settings: Settings, topics: tuple[str, ...], log: Any) -> Partitions:
    """The daemon's partition ownership, reading back on assignment which stars already alerted
    (the alerts topic) and the followed events' last updates (the events topic, when enabled)."""
    retry_s = settings.daemon.transaction_timeout_ms / 1000
    group = settings.consumer.group_id  # the read-back readers' group prefix (ACLs)
    published = PublishedAlerts(settings.kafka, settings.topics.alerts, retry_s, group=group)
    events = PublishedEvents(settings.kafka, settings.topics.events, retry_s, group=group)
    return Partitions(
        settings.state,
        topics,
        settings.trigger.evaluation_days,
        published=published,
        published_events=events if settings.events.enabled else None,
        log=log,
    )


def end_pending_offsets(
    output: Any, consumer: Consumer, log: Any, partitions: list[TopicPartition]
) -> None:
    """The group's offsets of ``partitions`` stay unstable: end this producer's pending
    offset commit, if any (a transaction marker lost in a broker restart; RELIABILITY.md,
    the stall). A failure is logged: the offset fetch goes on, and its time-out says what
    to do next."""
    log.warning(
        "committed offsets unstable, aborting this producer's pending offset commit",
        transactional_id=getattr(output, "transactional_id", None),
    )
    try:
        output.end_pending_offsets(partitions, consumer.consumer_group_metadata())
    except LensNetError as error:
        log.warning("could not end a pending offset commit", error=str(error))


def quietly(log: Any, what: str, function: Any, *args: Any) -> None:
    """``function(*args)``, a warning if it fails: shut-down steps after a failure must not
    hide it (or its exit code)."""
    try:
        function(*args)
    except Exception as error:  # librdkafka raises KafkaException after fatal errors
        log.warning(f"cannot {what} cleanly", error=str(error))


class StartupInterruptedError(LensNetError):
    """A signal arrived while start-up work was still being retried."""


def retrying(
    what: str,
    function: Callable[[], Any],
    attempts: int,
    log: Any,
    stopping: threading.Event | None = None,
) -> Any:
    """``function()``, retried with back-off up to ``attempts`` times while it fails with a
    retriable error of ours (Kafka, schema registry), an OS or a runtime error (start-up work:
    broker, topics, model). Once ``stopping`` is set (SIGTERM) it waits no more and raises
    :class:`StartupInterruptedError`: an orchestrator does not wait for the retries to run out."""
    stopping = stopping if stopping is not None else threading.Event()

    def retryable(error: BaseException) -> bool:
        if isinstance(error, LensNetError):
            return bool(getattr(error, "retriable", False))
        return isinstance(error, OSError | RuntimeError)

    def pause(seconds: float) -> None:
        stopping.wait(seconds)

    def attempt() -> Any:
        if stopping.is_set():
            raise StartupInterruptedError(f"stopped before it could {what}")
        return function()

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome else None
        log.warning(f"cannot {what} yet, retrying", attempt=state.attempt_number, error=str(error))

    try:
        return Retrying(
            retry=retry_if_exception(retryable),
            stop=stop_after_attempt(attempts) | stop_when_event_set(stopping),
            wait=wait_exponential(multiplier=0.5, max=10.0),
            sleep=pause,
            before_sleep=before_sleep,
            reraise=True,
        )(attempt)
    except Exception as error:
        if stopping.is_set() and not isinstance(error, StartupInterruptedError):
            raise StartupInterruptedError(f"stopped while trying to {what}: {error}") from error
        raise
