"""Kafka from pure Python: Beam's Kafka transforms, expanded by ferrobeam.

Beam's :class:`apache_beam.io.kafka.ReadFromKafka` and
:class:`~apache_beam.io.kafka.WriteToKafka` are cross-language transforms:
Beam expands them with a Java expansion service into Java transforms run by a
Java SDK harness. ferrobeam's job server serves Beam's ExpansionService too,
and runs the transforms natively (with librdkafka), so no Java is involved.

Beam's own classes work with ferrobeam's address::

    ReadFromKafka(consumer_config={...}, topics=[...],
                  expansion_service="localhost:8099")  # a ferrobeam job server

The classes here are the same transforms, with the expansion service
defaulting to ferrobeam: the job server the pipeline runs on
(``--job_endpoint``), else the one ferrobeam embeds in this process. They
also take ferrobeam's own read settings (``idle_partition_timeout_ms``,
``max_records_per_second``, ``broker_timeout_ms``, ``max_drift_ms``), and
a ``backfill`` (:class:`KafkaBackfill`) that reads history from files
before the Kafka head takes over (the hybrid source).

Keys and values are raw bytes (Beam's ``ByteArrayDeserializer``; Java
deserializers cannot run here): decode them in a ``Map``. Without metadata a
missing key or value reads as ``b""``.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, Optional

from apache_beam.io import kafka as beam_kafka
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import PortableOptions
from apache_beam.transforms.external import NamedTupleBasedPayloadBuilder

__all__ = ["KafkaBackfill", "ReadFromKafka", "WriteToKafka", "default_expansion_service"]

@dataclasses.dataclass(frozen=True)
class KafkaBackfill:
    """History read from files before the Kafka head (the hybrid source).

    The files are read first, then each partition continues in Kafka, with no
    gap and no duplicate at the cut-over:

    - with ``cutover_time_ms``, records before that time come from the files,
      and each partition is read from Kafka from its first record at or after
      it. A file record that carries ``partition`` and ``offset`` fields (and
      ``topic``, with several topics) is cut by offset instead, which is exact
      even when timestamps are out of order;
    - without it, every file record must carry ``partition`` and ``offset``,
      and each partition continues right after the last offset the files hold
      of it. If Kafka no longer has the next one (retention deleted it), the
      job fails rather than skip records.

    Files are read in the order of their earliest timestamp, and the
    watermark follows: windows over history fire while the backfill runs.

    Args:
      files: A local path or glob pattern (``/data/rides/*.jsonl``).
      format: ``"jsonl"`` (one JSON object a line) or ``"text"``
        (``TIMESTAMP<TAB>VALUE`` lines).
      timestamp_field: JSON lines: the field holding the record's time, epoch
        millis or RFC 3339.
      key_field, value_field: JSON lines: the fields holding the key and the
        value (a string as its UTF-8 bytes, anything else as JSON). Default:
        no key, and the whole line as the value.
      cutover_time_ms: Where the files end and Kafka begins (epoch millis).
    """
    files: str
    format: str = "jsonl"
    timestamp_field: str = "timestamp"
    key_field: Optional[str] = None
    value_field: Optional[str] = None
    cutover_time_ms: Optional[int] = None


#: Beam's read schema plus ferrobeam's fields (Beam's expansion service
#: would not know them; ours reads fields by name).
_ReadSchema = typing.NamedTuple(  # type: ignore[misc]
    "_ReadSchema",
    list(typing.get_type_hints(beam_kafka.ReadFromKafkaSchema).items())
    + [("idle_partition_timeout_ms", Optional[int]), ("max_records_per_second", Optional[int]),
       ("broker_timeout_ms", Optional[int]), ("max_drift_ms", Optional[int])]
    # Resolved hints: under ``from __future__ import annotations`` a field's
    # ``type`` is a string, which Beam would map to a pickled-any field.
    + [("backfill_" + name, Optional[hint])  # type: ignore[misc]
       for name, hint in typing.get_type_hints(KafkaBackfill).items()],
)


def default_expansion_service(options: PipelineOptions) -> str:
    """The expansion service a pipeline with ``options`` uses by default:
    its ``--job_endpoint`` (a ferrobeam job server), else this process's
    embedded ferrobeam job server (started if needed)."""
    endpoint = options.view_as(PortableOptions).job_endpoint
    if endpoint and endpoint not in ("embed", "docker"):
        return endpoint
    from ferrobeam.runner import embedded_job_endpoint  # pylint: disable=import-outside-toplevel
    return embedded_job_endpoint(options)


class _DefaultsToFerrobeam:
    """Picks the expansion service when the transform is applied, from the
    pipeline's options, unless one was given."""

    _ferrobeam_default: bool = True

    def expand(self, pvalueish: Any) -> Any:  # pylint: disable=missing-function-docstring
        if self._ferrobeam_default:
            options = pvalueish.pipeline.options
            service: Any = default_expansion_service(options)
            # A job server with an auth token expands only for its holders.
            from ferrobeam import _auth  # pylint: disable=import-outside-toplevel
            from ferrobeam.options import FerrobeamOptions  # pylint: disable=import-outside-toplevel
            token = _auth.load_token(options.view_as(FerrobeamOptions).ferrobeam_auth_token_file)
            if token:
                service = _auth.expansion_service(service, token)
            self._expansion_service = service  # type: ignore[attr-defined]
        return super().expand(pvalueish)  # type: ignore[misc]


class ReadFromKafka(_DefaultsToFerrobeam, beam_kafka.ReadFromKafka):
    """Beam's ``ReadFromKafka``, expanded by ferrobeam by default.

    Takes Beam's arguments (see :class:`apache_beam.io.kafka.ReadFromKafka`),
    plus:

    Args:
      idle_partition_timeout_ms: With the ``CreateTime`` or ``LogAppendTime``
        policy, a partition that has been read to its end and received nothing
        for this long stops holding the watermark back: its watermark follows
        the wall clock, this far behind (default 2000). Records that arrive
        later with older timestamps are late.
      backfill: Read history from files first (:class:`KafkaBackfill`);
        needs the ``CreateTime`` or ``LogAppendTime`` policy.
      max_records_per_second: At most this many records a second from this
        read (files of a backfill included). Backpressure needs no setting:
        a read takes only what the pipeline keeps up with, and each read of a
        job gets its turn every epoch, so a fast topic cannot starve another.
      broker_timeout_ms: How long the brokers may stay unreachable, the
        client retrying with backoff, before the job fails saying so (default
        60000), at start and while running.
      max_drift_ms: Watermark alignment, with the ``CreateTime`` or
        ``LogAppendTime`` policy (refused with ``ProcessingTime``). A
        partition may run at most this many milliseconds past the least
        watermark of the other partitions of every read of the job that sets
        ``max_drift_ms``: a record past that is held back, and its partition
        paused, until the others catch up. The partition holding the least
        watermark is never held, so a whole read running ahead of another
        waits for it, and a partition replayed from far behind reads at full
        speed. Use it when one partition (or topic) replays history while the
        others are at the head: without it, everything read ahead waits in
        the pipeline's windows for the watermark, which the partition behind
        holds back. Until every partition has been read from (or an empty
        one has turned idle, see ``idle_partition_timeout_ms``) the others
        wait. Default: no alignment.
    """

    def __init__(self,
                 consumer_config: Mapping[str, str],
                 topics: list[str],
                 *args: Any,
                 expansion_service: Optional[str] = None,
                 idle_partition_timeout_ms: Optional[int] = None,
                 backfill: Optional[KafkaBackfill] = None,
                 max_records_per_second: Optional[int] = None,
                 broker_timeout_ms: Optional[int] = None,
                 max_drift_ms: Optional[int] = None,
                 **kwargs: Any) -> None:
        super().__init__(consumer_config, topics, *args, expansion_service="unused", **kwargs)
        self._ferrobeam_default = expansion_service is None
        self._expansion_service = expansion_service
        ours: dict[str, Any] = {}
        if idle_partition_timeout_ms is not None:
            ours["idle_partition_timeout_ms"] = idle_partition_timeout_ms
        if max_drift_ms is not None:
            ours["max_drift_ms"] = max_drift_ms
        if max_records_per_second is not None:
            ours["max_records_per_second"] = max_records_per_second
        if broker_timeout_ms is not None:
            ours["broker_timeout_ms"] = broker_timeout_ms
        if backfill is not None:
            ours.update(("backfill_" + k, v) for k, v in dataclasses.asdict(backfill).items())
        if ours:
            fields = dict.fromkeys(_ReadSchema._fields)
            fields.update(self._fields(consumer_config, topics, *args, **kwargs))
            fields.update(ours)
            self._payload = NamedTupleBasedPayloadBuilder(_ReadSchema(**fields)).payload()

    @staticmethod
    def _fields(consumer_config: Mapping[str, str], topics: list[str], *args: Any,
                **kwargs: Any) -> dict[str, Any]:
        """Beam's payload fields for these arguments (as Beam's __init__
        builds them), by binding them to its signature."""
        import inspect  # pylint: disable=import-outside-toplevel
        bound = inspect.signature(beam_kafka.ReadFromKafka.__init__).bind(
            None, consumer_config, topics, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        return {name: values.get(name) for name in beam_kafka.ReadFromKafkaSchema._fields}


class WriteToKafka(_DefaultsToFerrobeam, beam_kafka.WriteToKafka):
    """Beam's ``WriteToKafka``, expanded by ferrobeam by default.

    The input must be typed ``(bytes, bytes)`` pairs, e.g. produced by
    ``beam.Map(...).with_output_types(typing.Tuple[bytes, bytes])``, or
    ``beam.Row`` with ``with_headers=True``. The producer is idempotent and
    is flushed at every checkpoint.

    Exactly once: set ``transactional.id`` in ``producer_config`` (one id per
    write; the same id across restarts of the job). Records are then written
    in Kafka transactions committed when a checkpoint completes (without
    checkpoints: every second and at the end), so consumers with
    ``isolation.level=read_committed`` see each record once, also after a
    crash and restore; they see them a checkpoint interval later. The
    sink keeps its commit marker as the offset of consumer group
    ``ferrobeam-txn.<transactional.id>`` on partition 0 of ``topic``.
    """

    def __init__(self,
                 producer_config: Mapping[str, str],
                 topic: str,
                 *args: Any,
                 expansion_service: Optional[str] = None,
                 **kwargs: Any) -> None:
        super().__init__(producer_config, topic, *args, expansion_service="unused", **kwargs)
        self._ferrobeam_default = expansion_service is None
        self._expansion_service = expansion_service

