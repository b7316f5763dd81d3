"""Unit tests: decoding a spans record as the gateway writes it."""

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status, TracesData

import pytest

from gowatchtower_kafka import Consumer, reconciles_of, semconv


def _kv(key, value):
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _record(result="error", duration_ns=2_000_000):
    trace_id = bytes(range(16))
    root = Span(
        trace_id=trace_id, span_id=b"\x01" * 8, name="reconcile workload",
        start_time_unix_nano=1_000, end_time_unix_nano=1_000 + duration_ns,
        attributes=[_kv(semconv.CONTROLLER_NAME, "workload"), _kv(semconv.OBJECT_NAMESPACE, "default"),
                    _kv(semconv.OBJECT_NAME, "flaky"), _kv(semconv.RECONCILE_RESULT, result),
                    _kv(semconv.QUEUE_RETRIES, 3)],
        status=Status(code=Status.STATUS_CODE_ERROR, message="flaky asks to fail") if result == "error" else Status(),
    )
    child = Span(trace_id=trace_id, span_id=b"\x02" * 8, parent_span_id=root.span_id, name="get Workload (cache)")
    rs = ResourceSpans(scope_spans=[ScopeSpans(spans=[child, root])])
    rs.resource.attributes.append(_kv("service.name", "workload-operator"))
    return TracesData(resource_spans=[rs]).SerializeToString()


def test_a_record_yields_its_reconcile_not_its_api_calls():
    recs = reconciles_of(_record())
    assert len(recs) == 1
    r = recs[0]
    assert (r.service, r.controller, r.namespace, r.name, r.result) == ("workload-operator", "workload", "default", "flaky", "error")
    assert r.failed and r.error == "flaky asks to fail"
    assert r.duration_s == pytest.approx(0.002)
    assert r.trace_id == bytes(range(16)).hex()


def test_success_is_not_failed():
    r = reconciles_of(_record(result="success", duration_ns=1_500_000_000))[0]
    assert not r.failed and r.error == "" and r.duration_s == pytest.approx(1.5)


def test_semconv_is_generated_from_the_registry():
    assert semconv.RECONCILE_RESULT == "watchtower.reconcile.result"
    assert semconv.METRIC_RECONCILES_PROMETHEUS == "watchtower_reconciles_total"
    assert semconv.RECONCILE_SPAN_NAME == "reconcile {watchtower.controller.name}"


def test_consumer_refuses_what_cannot_work():
    with pytest.raises(ValueError, match="no brokers"):
        Consumer([], "g")
    with pytest.raises(ValueError, match="consumer group"):
        Consumer(["k:9092"], "")
