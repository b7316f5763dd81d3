"""A consumer group on the gateway's spans topic that yields reconcile records."""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional

from confluent_kafka import Consumer as _KafkaConsumer, KafkaError, KafkaException
from opentelemetry.proto.trace.v1.trace_pb2 import Status, TracesData

from . import semconv

DEFAULT_SPANS_TOPIC = "otlp_spans"

# "reconcile {watchtower.controller.name}": the part before the placeholder.
_RECONCILE_PREFIX = semconv.RECONCILE_SPAN_NAME.split("{", 1)[0]
_FAILED = {semconv.RECONCILE_RESULT_ERROR, semconv.RECONCILE_RESULT_TERMINAL_ERROR, semconv.RECONCILE_RESULT_PANIC}


@dataclasses.dataclass(frozen=True)
class Reconcile:
    """One reconcile span."""

    service: str
    controller: str
    namespace: str
    name: str
    result: str
    start_unix_nano: int
    duration_s: float
    trace_id: str
    span_id: str
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.result in _FAILED


def _value(any_value) -> str:
    kind = any_value.WhichOneof("value")
    return "" if kind is None else str(getattr(any_value, kind))


def reconciles_of(data: bytes) -> list[Reconcile]:
    """The reconcile spans of one spans record (OTLP protobuf TracesData)."""
    traces = TracesData()
    traces.ParseFromString(data)
    out = []
    for rs in traces.resource_spans:
        service = next((_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), "")
        for ss in rs.scope_spans:
            for span in ss.spans:
                if not span.name.startswith(_RECONCILE_PREFIX):
                    continue
                attrs = {a.key: _value(a.value) for a in span.attributes}
                out.append(Reconcile(
                    service=service,
                    controller=attrs.get(semconv.CONTROLLER_NAME) or span.name[len(_RECONCILE_PREFIX):],
                    namespace=attrs.get(semconv.OBJECT_NAMESPACE, ""),
                    name=attrs.get(semconv.OBJECT_NAME, ""),
                    result=attrs.get(semconv.RECONCILE_RESULT, ""),
                    start_unix_nano=span.start_time_unix_nano,
                    duration_s=(span.end_time_unix_nano - span.start_time_unix_nano) / 1e9,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    error=span.status.message if span.status.code == Status.STATUS_CODE_ERROR else "",
                ))
    return out


class Consumer:
    """A member of a consumer group on the spans topic.

    A new group starts at the newest records, or at the oldest retained with from_start=True;
    a group with committed offsets resumes from them. A record's offset is committed once its
    reconciles were all handed out and the next record is asked for (at least once). A record
    that is not OTLP protobuf is counted in ``undecodable`` and skipped.
    """

    def __init__(self, brokers: list[str], group: str, topic: str = DEFAULT_SPANS_TOPIC,
                 from_start: bool = False, config: Optional[dict] = None):
        if not brokers:
            raise ValueError("no brokers")
        if not group:
            raise ValueError("no consumer group: each reader of the topics needs its own")
        conf = {
            "bootstrap.servers": ",".join(brokers),
            "group.id": group,
            "auto.offset.reset": "earliest" if from_start else "latest",
            # Committed by reconciles(), after the record was handled.
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
        conf.update(config or {})
        self._consumer = _KafkaConsumer(conf)
        self._consumer.subscribe([topic])
        self.records = 0
        self.undecodable = 0

    def reconciles(self, idle_timeout: Optional[float] = None, max_records: Optional[int] = None) -> Iterator[Reconcile]:
        """Yields reconciles until idle_timeout seconds pass without a record (None: forever)
        or max_records records were handled."""
        idle = 0.0
        pending = None
        while max_records is None or self.records < max_records:
            msg = self._consumer.poll(1.0)
            if pending is not None:
                self._consumer.commit(message=pending, asynchronous=False)
                pending = None
            if msg is None:
                idle += 1.0
                if idle_timeout is not None and idle >= idle_timeout:
                    return
                continue
            idle = 0.0
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            try:
                recs = reconciles_of(msg.value())
            except Exception:  # noqa: BLE001 - a record that is not OTLP is skipped, not fatal
                self.undecodable += 1
                recs = []
            yield from recs
            self.records += 1
            pending = msg
        if pending is not None:
            self._consumer.commit(message=pending, asynchronous=False)

    def close(self) -> None:
        """Leaves the group: its partitions go to the other members at once."""
        self._consumer.close()
