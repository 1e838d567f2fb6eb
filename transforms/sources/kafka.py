"""Event Hubs (through its Kafka endpoint) or plain Kafka -> ``DeviceEvent``.

Why Kafka IO: Azure MedTech / iomt-fhir users' devices already write to an Event Hub,
and every Event Hubs namespace (Standard tier and up) speaks the Kafka protocol on
``<namespace>.servicebus.windows.net:9093``. Beam's ``ReadFromKafka`` gives a checkpointed,
splittable, unbounded read on Dataflow and Flink, which the Python Event Hubs SDK does not.
It is a cross-language transform: the Java Kafka client does the reading, so launching
needs Java and an expansion service (by default Beam downloads its IO expansion-service
jar on first use; ``--kafka-expansion-service HOST:PORT`` names one already running).

Secret handling, and its trade-off. Whatever goes into ``consumer_config`` is part of the
expansion request, of the expanded Java transform (serialized into the job graph) and of
KafkaIO's display data (shown in the Dataflow UI). So the connection string, which holds a
``SharedAccessKey``, is never put there. The launcher reads ``EVENTHUB_CONNECTION_STRING``
only to find the namespace (and check the string is well formed); the JAAS config carries
the placeholder ``${env:EVENTHUB_CONNECTION_STRING}``, resolved by the Kafka client's
``EnvVarConfigProvider`` (KIP-887) when the consumer is created on the worker. The price:

* the Java Kafka client must be 3.5 or newer (the provider class appears there), and if
  the client restricts automatic config providers
  (``-Dorg.apache.kafka.automatic.config.providers``), it must allow that one;
* ``EVENTHUB_CONNECTION_STRING`` must be set in the environment of the process that runs
  the Java transform: the expansion service (which inherits the launcher's environment when
  Beam starts it) and the Java SDK harness on the workers. That is easy with an EMBEDDED or
  PROCESS Java environment (Flink job server, a self-started expansion service) or a custom
  Java SDK container that exports it (e.g. from a secret store); Beam's default Docker
  containers and Dataflow's stock workers do not pass a launcher's environment on, and
  there is no Beam option that would without writing the value into the job.

There is deliberately no "put the secret in the job" fallback.

Envelope mapping (``record_to_event``, pure, no Kafka needed): the value is the ``Body``;
headers become ``Properties``, except Event Hubs / IoT Hub system annotations (``x-opt-*``,
``iothub-*`` but for the device-settable ``iothub-creation-time-utc``, AMQP message
properties), which Event Hubs' Kafka endpoint also exposes as headers and the reference
reads from ``SystemProperties``. From the record itself: ``x-opt-sequence-number`` = the
Kafka offset (on Event Hubs the Kafka offset *is* the sequence number),
``x-opt-enqueued-time`` = the record timestamp (on Event Hubs: the enqueue time),
``x-opt-partition-key`` = the key; plus ``kafka-topic``/``kafka-partition``/``kafka-offset``/
``kafka-timestamp-type`` for what the reference has no name for. ``IngestionTimeUtc`` = the
record timestamp (the reference uses the enqueued time). Header values are decoded as
``transforms.sources.amqp_values`` explains.
"""
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import apache_beam as beam

from transforms.sources.amqp_values import header_value
from transforms.records.dead_letter import DEAD_LETTER_TAG, STAGE_READ, dead_letter
from transforms.records.device_event import DeviceEvent
from transforms.mapping import timeutil

CONNECTION_STRING_ENV = "EVENTHUB_CONNECTION_STRING"
EVENTHUB_KAFKA_PORT = 9093
DEFAULT_CONSUMER_GROUP = "$Default"
ENV_CONFIG_PROVIDER = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
_PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"

# IoT Hub / AMQP names the reference's SDK reports under SystemProperties (besides x-opt-*).
_SYSTEM_HEADER_NAMES = frozenset({
    "message-id", "user-id", "to", "subject", "reply-to", "correlation-id", "content-type",
    "content-encoding", "absolute-expiry-time", "creation-time", "group-id", "group-sequence",
    "reply-to-group-id", "dt-dataschema", "dt-subject",
})
_DEVICE_SETTABLE_IOTHUB = frozenset({"iothub-creation-time-utc"})


class KafkaSourceError(ValueError):
    """The Kafka / Event Hubs source is misconfigured. Messages never hold secret values."""


def _is_system_header(name: str) -> bool:
    lowered = name.lower()
    if lowered in _DEVICE_SETTABLE_IOTHUB:
        return False
    return lowered.startswith("x-opt-") or lowered.startswith("iothub-") or lowered in _SYSTEM_HEADER_NAMES


def parse_connection_string(text: str) -> Tuple[str, Optional[str]]:
    """``(namespace host, EntityPath or None)`` of an Event Hubs connection string.

    Errors name the missing part, never the text (it holds the key)."""
    parts: Dict[str, str] = {}
    for segment in (text or "").split(";"):
        name, sep, value = segment.strip().partition("=")
        if sep:
            parts[name.strip().lower()] = value.strip()
    endpoint = parts.get("endpoint", "")
    host = endpoint.split("://", 1)[-1].strip("/").split("/", 1)[0].split(":", 1)[0]
    if not host:
        raise KafkaSourceError(f"{CONNECTION_STRING_ENV} has no Endpoint=sb://<namespace>.servicebus.windows.net/.")
    if not (parts.get("sharedaccesskey") and parts.get("sharedaccesskeyname")) and not parts.get(
            "sharedaccesssignature"):
        raise KafkaSourceError(f"{CONNECTION_STRING_ENV} has no SharedAccessKeyName/SharedAccessKey "
                               "(or SharedAccessSignature).")
    return host, parts.get("entitypath") or None


def eventhubs_bootstrap(text: str) -> str:
    """``host:port`` of an Event Hubs namespace's Kafka endpoint: port 9093 (an Azure
    namespace's Endpoint may name its AMQP port, 5671, which Kafka does not speak), unless a
    host outside Azure's ``*.servicebus.*`` names a port (``sb://127.0.0.1:9093/``: a private
    or local Event Hubs-compatible broker). Errors name no part of the text."""
    host, _ = parse_connection_string(text)
    if ".servicebus." in host.lower():
        return f"{host}:{EVENTHUB_KAFKA_PORT}"
    endpoint = next((seg.strip().partition("=")[2].strip() for seg in text.split(";")
                     if seg.strip().lower().startswith("endpoint=")), "")
    authority = endpoint.split("://", 1)[-1].strip("/").split("/", 1)[0]
    port = authority.rpartition(":")[2] if ":" in authority else ""
    if port and not port.isdigit():
        raise KafkaSourceError(f"{CONNECTION_STRING_ENV} has an Endpoint port that is not a number.")
    return f"{host}:{port or EVENTHUB_KAFKA_PORT}"


# Consumer settings a user may not pass as an option: secrets (they would land in the job
# graph), and the ones the Event Hubs login is built from.
_SECRET_KEY_PARTS = ("password", "jaas", "secret", "ssl.key.", "ssl.keystore.key", "credentials", "token")
_RESERVED_KEYS = frozenset({"bootstrap.servers", "group.id", "sasl.jaas.config"})


def parse_consumer_settings(items: Iterable[str]) -> Tuple[Tuple[str, str], ...]:
    """``--kafka-consumer-config KEY=VALUE`` items -> ``((key, value), ...)``, refusing secrets.

    For what a private cluster needs besides the login: a CA truststore
    (``ssl.truststore.type=PEM``, ``ssl.truststore.location=/path/ca.pem``), timeouts, client
    ids. Whatever is given here is in the job graph and display data, so passwords, keys,
    tokens and JAAS settings are refused (errors name the key, never the value), as is a
    value that looks like a connection string."""
    out = []
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise KafkaSourceError("--kafka-consumer-config takes KEY=VALUE.")
        lowered = key.lower()
        if any(part in lowered for part in _SECRET_KEY_PARTS) or "sharedaccess" in value.lower():
            raise KafkaSourceError(f"--kafka-consumer-config {key}: secrets are never options "
                                   f"(the connection string comes from {CONNECTION_STRING_ENV}).")
        if lowered in _RESERVED_KEYS or lowered.startswith("config.providers"):
            raise KafkaSourceError(f"--kafka-consumer-config {key}: set by the source itself.")
        out.append((key, value.strip()))
    return tuple(out)


@dataclass(frozen=True)
class KafkaSource:
    """What to read: an Event Hub (no ``bootstrap_servers``) or a plain Kafka topic.

    Holds names and addresses only, never the connection string, so it is safe to pickle,
    print and ship."""

    topic: Optional[str] = None
    bootstrap_servers: Optional[str] = None
    consumer_group: str = DEFAULT_CONSUMER_GROUP
    offset_reset: str = "earliest"
    expansion_service: Optional[str] = None
    connection_env: str = CONNECTION_STRING_ENV
    #: non-secret consumer settings (``parse_consumer_settings``), applied last
    extra_config: Tuple[Tuple[str, str], ...] = ()

    @property
    def is_eventhubs(self) -> bool:
        return not self.bootstrap_servers

    def resolve(self, environ: Optional[Mapping[str, str]] = None) -> Tuple[str, Dict[str, str]]:
        """``(topic, consumer config)``; reads the environment for Event Hubs, checks at launch."""
        topic, config = self._resolve(environ)
        config.update(dict(parse_consumer_settings(f"{k}={v}" for k, v in self.extra_config)))
        return topic, config

    def _resolve(self, environ: Optional[Mapping[str, str]]) -> Tuple[str, Dict[str, str]]:
        if self.offset_reset not in ("earliest", "latest"):
            raise KafkaSourceError("--kafka-offset-reset must be earliest or latest.")
        if not self.consumer_group:
            raise KafkaSourceError("--eventhub-consumer-group must not be empty.")
        if not self.is_eventhubs:
            if not self.topic:
                raise KafkaSourceError("--kafka-bootstrap-servers needs --kafka-topic.")
            return self.topic, kafka_consumer_config(self.bootstrap_servers, self.consumer_group,
                                                     self.offset_reset)
        environ = os.environ if environ is None else environ
        secret = environ.get(self.connection_env)
        if not secret:
            raise KafkaSourceError(f"Reading an Event Hub needs its connection string in the environment "
                                   f"variable {self.connection_env} (it is never an option).")
        host, entity = parse_connection_string(secret)
        topic = self.topic or entity
        if not topic:
            raise KafkaSourceError("Name the Event Hub: --eventhub-name (or EntityPath in the connection string).")
        if entity and topic != entity:
            raise KafkaSourceError("--eventhub-name differs from the connection string's EntityPath "
                                   "(that key only grants access to its own Event Hub).")
        return topic, eventhubs_consumer_config(eventhubs_bootstrap(secret), self.consumer_group,
                                                self.offset_reset, self.connection_env)


def eventhubs_consumer_config(namespace_host: str, consumer_group: str = DEFAULT_CONSUMER_GROUP,
                              offset_reset: str = "earliest",
                              connection_env: str = CONNECTION_STRING_ENV) -> Dict[str, str]:
    """Kafka consumer config for an Event Hubs namespace (``host``, port 9093, or
    ``host:port``); the password is an env placeholder."""
    bootstrap = namespace_host if ":" in namespace_host else f"{namespace_host}:{EVENTHUB_KAFKA_PORT}"
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.jaas.config": (f'{_PLAIN_LOGIN} required username="$ConnectionString" '
                             f'password="${{env:{connection_env}}}";'),
        "config.providers": "env",
        "config.providers.env.class": ENV_CONFIG_PROVIDER,
        "group.id": consumer_group,
        "auto.offset.reset": offset_reset,
        # Event Hubs closes idle connections after 240 s; Microsoft's recommended client values.
        "connections.max.idle.ms": "180000",
        "metadata.max.age.ms": "180000",
    }


def kafka_consumer_config(bootstrap_servers: str, consumer_group: str = DEFAULT_CONSUMER_GROUP,
                          offset_reset: str = "earliest") -> Dict[str, str]:
    """Kafka consumer config for a plain (unauthenticated) Kafka cluster."""
    return {"bootstrap.servers": bootstrap_servers, "group.id": consumer_group,
            "auto.offset.reset": offset_reset}


def _field(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def _headers(headers: Optional[Iterable[Any]]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    properties: Dict[str, Any] = {}
    system: Dict[str, Any] = {}
    for header in headers or ():
        name = _field(header, "key")
        if name is None:
            continue
        name = name.decode("utf-8", "replace") if isinstance(name, (bytes, bytearray)) else str(name)
        (system if _is_system_header(name) else properties)[name] = header_value(_field(header, "value"))
    return properties, system


def record_to_event(record: Any) -> DeviceEvent:
    """One ``ReadFromKafka(with_metadata=True)`` row -> ``DeviceEvent`` (see module docstring).

    Accepts the Beam Row (attributes) or a dict with the same field names."""
    properties, system = _headers(_field(record, "headers"))
    topic, partition, offset = _field(record, "topic"), _field(record, "partition"), _field(record, "offset")
    timestamp = _field(record, "timestamp")
    ticks = None
    if timestamp is not None and int(timestamp) >= 0:  # Kafka's "no timestamp" is -1
        ticks = timeutil.from_unix_ms(int(timestamp))
        system["x-opt-enqueued-time"] = timeutil.format_trimmed(ticks)
    if offset is not None:
        system["x-opt-sequence-number"] = int(offset)
    key = _field(record, "key")
    if key is not None:
        system["x-opt-partition-key"] = header_value(key)
    system["kafka-topic"] = topic
    system["kafka-partition"] = None if partition is None else int(partition)
    system["kafka-offset"] = None if offset is None else int(offset)
    type_name = _field(record, "timestampTypeName")
    if type_name:
        system["kafka-timestamp-type"] = type_name
    value = _field(record, "value")
    body = b"" if value is None else bytes(value)
    return DeviceEvent(body=body, properties=properties, system_properties=system, ingestion_time=ticks)


class _RecordsToEvents(beam.DoFn):
    """A record whose metadata cannot be converted costs only itself: a read dead letter that
    says where it is (topic, partition, offset), never its content."""

    def process(self, record):
        try:
            yield record_to_event(record)
        except Exception as e:  # noqa: BLE001 -- one odd record must not stop the stream
            where = {name: _field(record, name) for name in ("topic", "partition", "offset")}
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, dead_letter(
                STAGE_READ, e, None, {k: (None if v is None else str(v) if k == "topic" else int(v))
                                      for k, v in where.items()}))


class ReadKafkaDeviceEvents(beam.PTransform):
    """``ReadFromKafka`` (with metadata) -> outputs ``events`` (``DeviceEvent``) and ``dead_letter``.

    The topic and consumer config are resolved when the transform is built (at launch), so
    a missing or malformed connection string stops the launch with a clear message."""

    def __init__(self, source: KafkaSource, environ: Optional[Mapping[str, str]] = None,
                 max_num_records: Optional[int] = None, max_read_time: Optional[int] = None,
                 start_read_time: Optional[int] = None, expansion_service: Any = None):
        """``max_*`` bound the read and ``start_read_time`` (ms since the epoch) starts it at a
        time: for tests and one-off replays; the pipeline itself reads without bounds.
        ``expansion_service``: the Java expansion service the launcher chose for the runner
        (as Beam's ``ReadFromKafka`` takes it), unless the source names one."""
        super().__init__()
        self._topic, self._config = source.resolve(environ)
        # an address (--kafka-expansion-service) or a service object the launcher chose
        # (``expansion_service=``); None: Beam's own default
        self._expansion_service = source.expansion_service or expansion_service
        self._max_num_records = max_num_records
        self._max_read_time = max_read_time
        self._start_read_time = start_read_time

    def expand(self, pbegin):
        from apache_beam.io.kafka import ReadFromKafka
        return (pbegin
                | "ReadKafka" >> ReadFromKafka(
                    consumer_config=self._config, topics=[self._topic], with_metadata=True,
                    # Resume from the consumer group's committed offsets after a restart, as the
                    # reference resumes from its checkpoints.
                    commit_offset_in_finalize=True,
                    max_num_records=self._max_num_records, max_read_time=self._max_read_time,
                    start_read_time=self._start_read_time,
                    expansion_service=self._expansion_service)
                | "ToEvent" >> beam.ParDo(_RecordsToEvents()).with_outputs(DEAD_LETTER_TAG, main="events"))
