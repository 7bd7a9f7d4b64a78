"""Read orders.normalized with public libraries only (confluent-kafka, fastavro).

Each value is Avro single-object encoding: C3 01, the 8-byte CRC-64-AVRO
fingerprint of the writer schema, then the Avro body. Keep every .avsc version
from orderpulse's schemas/avro; look the writer up by fingerprint, read with it.

    python examples/consume_normalized.py BOOTSTRAP [TOPIC] [MAX_MESSAGES]
"""

import io
import json
import pathlib
import sys

from confluent_kafka import Consumer
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMAS = pathlib.Path(__file__).resolve().parents[1] / "schemas" / "avro"


def load_writers(folder: pathlib.Path) -> dict:
    writers = {}
    for path in folder.glob("*.avsc"):
        raw = json.loads(path.read_text())
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))
        writers[fp] = parse_schema(raw)
    return writers


def decode(value: bytes, writers: dict) -> dict:
    if value[:2] != b"\xc3\x01":
        raise ValueError("not Avro single-object encoding")
    return schemaless_reader(io.BytesIO(value[10:]), writers[value[2:10]])


def main() -> None:
    bootstrap = sys.argv[1]
    topic = sys.argv[2] if len(sys.argv) > 2 else "orders.normalized"
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    writers = load_writers(SCHEMAS)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "example-reader",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    seen = 0
    try:
        while seen < limit:
            msg = consumer.poll(30.0)
            if msg is None:
                break
            if msg.error():
                raise SystemExit(str(msg.error()))
            event = decode(msg.value(), writers)
            print(json.dumps({"key": msg.key().decode(), "order_id": event["order_id"],
                              "status": event["status"], "total_minor": event["total_minor"],
                              "currency": event["currency"],
                              "event_time": event["event_time"].isoformat()}))
            seen += 1
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
