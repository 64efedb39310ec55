#!/usr/bin/env python3
"""Writes tests/fixtures/history/decoded.json: the history record and the dead delivery Herald
wrote in Confluent wire format (tests/fixtures/history/*.bin, written by the test
`records_herald_writes_are_decoded_by_fastavro_and_confluent_kafka` with HERALD_WRITE_FIXTURES=1),
as two independent readers decode them: `confluent-kafka`'s AvroDeserializer and fastavro, each
with the writer schema it finds in the registry under the record's id.

    herald sandbox --listen 127.0.0.1:8090 &      # a fresh one: ids start at 1
    python3 -m venv ~/.cache/herald-fixtures
    ~/.cache/herald-fixtures/bin/pip install -r scripts/requirements-fixtures.txt
    ~/.cache/herald-fixtures/bin/python scripts/history_fixtures.py http://127.0.0.1:8090/registry

The script registers the schemas as Herald does (each standing alone, every named type it uses
defined in place, under `<topic>-value`), history first, so they get the ids the records carry.
Times are rendered as epoch milliseconds, so the test compares them exactly.
"""

import datetime
import io
import json
import pathlib
import struct
import sys

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
FIXTURES = ROOT / "tests" / "fixtures" / "history"
RECORDS = {
    "delivery-record.bin": ("herald.deliveries", "DeliveryRecord"),
    "dead-delivery.bin": ("herald.dlq", "DeadDelivery"),
}


def avsc(name):
    return (SCHEMAS / f"{name}.avsc").read_text()


def inline(text, name, definition):
    """The first reference to the named type `name` replaced by its definition, as Herald does."""
    return text.replace(f'"{name}"', definition, 1)


def standalone(name):
    task = inline(avsc("DeliveryTask"), "io.herald.EventEnvelope", avsc("EventEnvelope"))
    text = avsc(name)
    text = inline(text, "io.herald.DeliveryRecord", avsc("DeliveryRecord"))
    text = inline(text, "io.herald.DeliveryTask", task)
    return text


def plain(value):
    """JSON for what a library decoded: datetimes as epoch milliseconds."""
    if isinstance(value, datetime.datetime):
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        return (value - epoch) // datetime.timedelta(milliseconds=1)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def main(registry_url):
    client = SchemaRegistryClient({"url": registry_url})
    for topic, name in RECORDS.values():
        client.register_schema(f"{topic}-value", Schema(standalone(name), "AVRO"))
    deserializer = AvroDeserializer(client)
    out = {"schema_ids": {}, "fastavro": {}, "confluent-kafka": {}}
    for file, (topic, _) in RECORDS.items():
        data = (FIXTURES / file).read_bytes()
        magic, schema_id = struct.unpack(">bI", data[:5])
        assert magic == 0, f"{file}: not Confluent wire format"
        out["schema_ids"][file] = schema_id
        context = SerializationContext(topic, MessageField.VALUE)
        out["confluent-kafka"][file] = plain(deserializer(data, context))
        writer = fastavro.parse_schema(json.loads(client.get_schema(schema_id).schema_str))
        out["fastavro"][file] = plain(fastavro.schemaless_reader(io.BytesIO(data[5:]), writer))
    (FIXTURES / "decoded.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"wrote {FIXTURES / 'decoded.json'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8090/registry")
