"""gowatchtower-kafka: write the reconciles of the spans topic as JSON lines."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .consumer import DEFAULT_SPANS_TOPIC, Consumer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gowatchtower-kafka", description=__doc__)
    ap.add_argument("--brokers", required=True, help="bootstrap brokers, host:port, comma-separated")
    ap.add_argument("--group", required=True, help="this reader's consumer group")
    ap.add_argument("--topic", default=DEFAULT_SPANS_TOPIC)
    ap.add_argument("--from-start", action="store_true", help="a new group reads the retained records first")
    ap.add_argument("--out", default="-", help="file to append the records to (default: standard output)")
    ap.add_argument("--slow", type=float, default=None, help="only reconciles at least this many seconds long, or failed")
    ap.add_argument("--idle-exit", type=float, default=None, help="stop after this many seconds without a record")
    ap.add_argument("--max-records", type=int, default=None, help="stop after handling this many Kafka records")
    args = ap.parse_args(argv)

    consumer = Consumer(args.brokers.split(","), args.group, topic=args.topic, from_start=args.from_start)
    out = sys.stdout if args.out == "-" else open(args.out, "a", encoding="utf-8")
    written = 0
    try:
        for rec in consumer.reconciles(idle_timeout=args.idle_exit, max_records=args.max_records):
            if args.slow is not None and not (rec.failed or rec.duration_s >= args.slow):
                continue
            out.write(json.dumps(dataclasses.asdict(rec), sort_keys=True) + "\n")
            out.flush()
            written += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        if out is not sys.stdout:
            out.close()
    print(f"gowatchtower-kafka: {consumer.records} records, {written} reconciles written, {consumer.undecodable} undecodable", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
