"""Read GoWatchtower's Kafka topics: the reconciles of Kubernetes operators, as OpenTelemetry data."""

from .consumer import Consumer, Reconcile, reconciles_of

__all__ = ["Consumer", "Reconcile", "reconciles_of"]
