#!/usr/bin/env python3
"""Writes tests/fixtures/confluent/: records in Confluent wire format as the `confluent-kafka`
package's AvroSerializer writes them, registering their schema in Herald's registry simulator.

    herald sandbox --listen 127.0.0.1:8090 &
    python3 -m venv ~/.cache/herald-fixtures
    ~/.cache/herald-fixtures/bin/pip install -r scripts/requirements-fixtures.txt
    ~/.cache/herald-fixtures/bin/python scripts/confluent_fixtures.py http://127.0.0.1:8090/registry

The fixture records the schema text, the subject and the id the serializer got; a test that
registers the same schema first in a fresh simulator gets the same id (ids start at 1).
"""

import datetime
import decimal
import json
import pathlib
import sys

import confluent_kafka
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "confluent"
TOPIC = "academy.lessons"

SCHEMA = {
    "type": "record",
    "name": "LessonCompleted",
    "namespace": "io.academy",
    "fields": [
        {"name": "attempt_id", "type": "string"},
        {"name": "tenant", "type": "string"},
        {"name": "email", "type": "string"},
        {"name": "lesson_title", "type": "string"},
        {"name": "course_id", "type": "string"},
        {"name": "module_title", "type": "string"},
        {"name": "completion_percentage", "type": "int"},
        {
            "name": "price",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 8, "scale": 2},
        },
        {"name": "completed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "coupon", "type": ["null", "string"], "default": None},
    ],
}


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8090/registry"
    client = SchemaRegistryClient({"url": url})
    schema_text = json.dumps(SCHEMA)
    serializer = AvroSerializer(client, schema_text, conf={"auto.register.schemas": True})
    context = SerializationContext(TOPIC, MessageField.VALUE)
    record = {
        "attempt_id": "att_confluent_python",
        "tenant": "ws_academyflow",
        "email": "nina@academyflow.io",
        "lesson_title": "Customer Research Fundamentals",
        "course_id": "course_creator-accelerator",
        "module_title": "Growth Foundations",
        "completion_percentage": 62,
        "price": decimal.Decimal("199.00"),
        "completed_at": datetime.datetime(
            2026, 3, 21, 15, 6, 0, 250000, tzinfo=datetime.timezone.utc
        ),
        "coupon": None,
    }
    value = serializer(record, context)
    schema_id = int.from_bytes(value[1:5], "big")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lesson-confluent-kafka.bin").write_bytes(value)
    fixture = {
        "file": "lesson-confluent-kafka.bin",
        "library": "confluent-kafka",
        "version": confluent_kafka.version()[0],
        "topic": TOPIC,
        "subject": f"{TOPIC}-value",
        "schema_id": schema_id,
        "schema": schema_text,
        "expect": {
            "event_id": record["attempt_id"],
            "price": "199.00",
            "completed_at": "2026-03-21T15:06:00.250Z",
        },
    }
    (OUT / "manifest.json").write_text(json.dumps(fixture, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} (schema id {schema_id})")


if __name__ == "__main__":
    main()
