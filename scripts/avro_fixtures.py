#!/usr/bin/env python3
"""Writes tests/fixtures/avro/: EventEnvelope records in Avro single-object encoding, as two
independent Avro libraries write them (fastavro, and the Apache `avro` package), so Herald's
tests read bytes it did not write itself.

Each library computes the schema fingerprint (CRC-64-AVRO of the Parsing Canonical Form) on
its own, and they disagree for a schema with a logical type: fastavro reduces
`{"type": "long", "logicalType": ...}` to `"long"` as the specification and the Java reference
implementation do, while the `avro` package (1.12) keeps `{"type":"long"}`, as the Rust
apache-avro crate does (the fingerprint earlier Herald versions wrote). Herald reads both. Records are written with Herald's
schema (schemas/EventEnvelope.avsc, with timestamp-millis logical types) and with an evolved
producer schema that adds defaulted fields (tests/fixtures/avro/EventEnvelope-evolved.avsc).

    python3 -m venv ~/.cache/herald-fixtures
    ~/.cache/herald-fixtures/bin/pip install -r scripts/requirements-fixtures.txt
    ~/.cache/herald-fixtures/bin/python scripts/avro_fixtures.py

manifest.json lists every file with the library that wrote it, the fingerprint in header
order, and the values the test expects to read back.
"""

import datetime
import io
import json
import pathlib

import avro.io
import avro.schema
import fastavro
import fastavro.schema

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "avro"
MAGIC = b"\xc3\x01"
# The payload of the seeds' lesson.completed event.
SEED_LESSON = {
    "student_id": "stu_2048",
    "email": "nina@academyflow.io",
    "lesson_id": "lesson_customer-research",
    "lesson_title": "Customer Research Fundamentals",
    "module_id": "module_growth-foundations",
    "module_title": "Growth Foundations",
    "course_id": "course_creator-accelerator",
    "completion_percentage": 62,
    "time_spent_seconds": 1840,
    "completed_at": "2026-03-21T14:18:00Z",
}


def evolved_schema(base: dict) -> dict:
    """Herald's schema plus two fields a producer added, each with a default."""
    schema = json.loads(json.dumps(base))
    schema["fields"] += [
        {"name": "source", "type": "string", "default": "web"},
        {
            "name": "sent_at",
            "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}],
            "default": None,
        },
    ]
    return schema


def with_fastavro(schema: dict, record: dict) -> tuple[bytes, str]:
    parsed = fastavro.parse_schema(schema)
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, record)
    return MAGIC + fingerprint + body.getvalue(), canonical


def with_apache_avro(schema: dict, record: dict) -> tuple[bytes, str]:
    parsed = avro.schema.parse(json.dumps(schema))
    fingerprint = parsed.fingerprint("CRC-64-AVRO")
    body = io.BytesIO()
    avro.io.DatumWriter(parsed).write(record, avro.io.BinaryEncoder(body))
    return MAGIC + fingerprint + body.getvalue(), parsed.canonical_form


def main() -> None:
    base = json.loads((ROOT / "schemas" / "EventEnvelope.avsc").read_text())
    evolved = evolved_schema(base)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "EventEnvelope-evolved.avsc").write_text(json.dumps(evolved, indent=2) + "\n")

    occurred = datetime.datetime(2026, 3, 21, 15, 6, 0, 250000, tzinfo=datetime.timezone.utc)
    writers = {
        "fastavro": (with_fastavro, fastavro.__version__),
        "apache-avro-python": (with_apache_avro, avro.__version__),
    }
    manifest = []
    for library, (write, version) in writers.items():
        for variant, schema in [("herald", base), ("evolved", evolved)]:
            event_id = f"evt_{library}_{variant}"
            record = {
                "event_id": event_id,
                "workspace_id": "ws_academyflow",
                "event": "lesson.completed",
                "resource": "course",
                "resource_id": "creator-accelerator",
                "payload": json.dumps(SEED_LESSON),
                "occurred_at": occurred,
                "received_at": None,
            }
            if variant == "evolved":
                record["source"] = "mobile"
                record["sent_at"] = occurred
            data, canonical = write(schema, record)
            name = f"{variant}-{library}.bin"
            (OUT / name).write_bytes(data)
            manifest.append(
                {
                    "file": name,
                    "library": library,
                    "version": version,
                    "schema": "schemas/EventEnvelope.avsc"
                    if variant == "herald"
                    else "tests/fixtures/avro/EventEnvelope-evolved.avsc",
                    "canonical_form": canonical,
                    "fingerprint": data[2:10].hex(),
                    "expect": {
                        "event_id": event_id,
                        "workspace_id": record["workspace_id"],
                        "event": record["event"],
                        "resource_id": record["resource_id"],
                        "occurred_at": "2026-03-21T15:06:00.250Z",
                        "completion_percentage": 62,
                    },
                }
            )
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(manifest)} records to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
