"""Confluent's own Python client against Sluice's registry API.

Usage: confluent_client.py <registry url> <subject>
Exits 0 when every step behaves as it does against Confluent Schema Registry.
"""
import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

url, subject = sys.argv[1], sys.argv[2]
client = SchemaRegistryClient({"url": url})

v1 = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
v2 = {"type": "object", "properties": {"n": {"type": "integer"}, "note": {"type": "string"}}, "required": ["n"], "additionalProperties": False}
breaking = {"type": "object", "properties": {"n": {"type": "string"}}, "required": ["n"]}

id1 = client.register_schema(subject, Schema(json.dumps(v1), "JSON"))
assert isinstance(id1, int) and id1 > 0, id1
assert client.register_schema(subject, Schema(json.dumps(v1), "JSON")) == id1, "same schema, same id"

fetched = client.get_schema(id1)
assert fetched.schema_type == "JSON", fetched.schema_type
assert json.loads(fetched.schema_str) == v1

assert client.test_compatibility(subject, Schema(json.dumps(v2), "JSON")) is True
assert client.test_compatibility(subject, Schema(json.dumps(breaking), "JSON")) is False
id2 = client.register_schema(subject, Schema(json.dumps(v2), "JSON"))
assert id2 != id1

latest = client.get_latest_version(subject)
assert (latest.schema_id, latest.version, latest.subject) == (id2, 2, subject), latest
assert json.loads(latest.schema.schema_str) == v2
assert client.get_version(subject, 1).schema_id == id1
assert client.lookup_schema(subject, Schema(json.dumps(v1), "JSON")).version == 1
assert subject in client.get_subjects()
assert client.get_versions(subject) == [1, 2]

try:
    client.register_schema(subject, Schema(json.dumps(breaking), "JSON"))
    raise AssertionError("an incompatible schema was registered")
except SchemaRegistryError as e:
    assert e.http_status_code == 409 and e.error_code == 40901, (e.http_status_code, e.error_code)

client.set_compatibility(subject_name=subject, level="FULL")
assert client.get_compatibility(subject) == "FULL"
try:
    client.get_version(subject, 7)
    raise AssertionError("version 7 exists?")
except SchemaRegistryError as e:
    assert e.error_code == 40402, e.error_code

# The serializer registers under <topic>-value and frames records with the schema id; the
# deserializer fetches the schema back by id.
topic = subject + ".topic"
ser = JSONSerializer(json.dumps(v1), client)
ctx = SerializationContext(topic, MessageField.VALUE)
framed = ser({"n": 7}, ctx)
assert framed[0] == 0, "Confluent wire format: magic byte 0"
de = JSONDeserializer(json.dumps(v1), schema_registry_client=client)
assert de(framed, ctx) == {"n": 7}

assert client.delete_subject(subject) == [1, 2]
assert client.delete_subject(subject, permanent=True) == [1, 2]
print("confluent client: ok")
