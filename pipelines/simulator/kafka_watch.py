"""Watch a Kafka topic from outside a job: partition ends, a consumer group's committed
offsets, the lag between them, and the topic's records.

Why a module: a streaming job's own view cannot prove it keeps up. The broker's view can:
the consumer group's committed offsets (Kafka IO commits them when a Flink checkpoint
completes) against each partition's end say how far behind the job is and, after a
restart, where it resumed. The stream tests, ``scripts/soak_stream`` and the stream load
benchmark (issue 20) measure with these same functions.

Each call opens a short-lived ``confluent-kafka`` client (the simulator's extra) that never
joins the group, so watching does not disturb the job's consumer. Every call is bounded by
``timeout``. Record values are returned to the caller, never logged.
"""
from __future__ import annotations

import time
import uuid
from typing import Dict, List, Mapping, NamedTuple, Optional

#: librdkafka's "no committed offset" (OFFSET_INVALID)
NO_OFFSET = -1001


class KafkaWatchError(RuntimeError):
    """The broker did not answer in time, or the topic is not there."""


class Record(NamedTuple):
    partition: int
    offset: int
    timestamp_ms: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: tuple  # ((name, bytes), ...)


def client_config(bootstrap: str, connection_string: Optional[str] = None,
                  ca_file: Optional[str] = None) -> Dict[str, str]:
    """librdkafka settings for a plain broker, or an Event Hubs-style SASL_SSL endpoint
    (``$ConnectionString`` / the connection string) when ``connection_string`` is given."""
    config = {"bootstrap.servers": bootstrap}
    if connection_string:
        config.update({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                       "sasl.username": "$ConnectionString", "sasl.password": connection_string})
        if ca_file:
            config["ssl.ca.location"] = ca_file
    return config


def _consumer(config: Mapping[str, str], group: Optional[str] = None):
    from confluent_kafka import Consumer
    # log_level 2: a short-lived client's coordinator connection closing is not worth a line
    return Consumer({**config, "group.id": group or f"watch-{uuid.uuid4().hex[:8]}",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 2})


def _topic_metadata(consumer, topic: str, timeout: float):
    """The topic's metadata, or None. Asks for all topics: a request naming a missing topic
    makes a broker with ``auto.create.topics.enable`` create it, and watching must not."""
    return consumer.list_topics(timeout=timeout).topics.get(topic)


def partitions(config: Mapping[str, str], topic: str, timeout: float = 10.0) -> List[int]:
    """The topic's partition numbers; [] when the topic does not exist."""
    consumer = _consumer(config)
    try:
        meta = _topic_metadata(consumer, topic, timeout)
    finally:
        consumer.close()
    if meta is None or meta.error is not None:
        return []
    return sorted(meta.partitions)


def create_topic(config: Mapping[str, str], topic: str, partitions: int = 2, timeout: float = 30.0) -> None:
    """Create ``topic`` (as an Event Hub exists before its job starts)."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient(dict(config))  # kept alive until the answer: its futures need the handle
    futures = admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=timeout)
    futures[topic].result(timeout=timeout)


def end_offsets(config: Mapping[str, str], topic: str, timeout: float = 10.0) -> Dict[int, int]:
    """partition -> its end (the offset the next record will get)."""
    from confluent_kafka import TopicPartition
    consumer = _consumer(config)
    try:
        meta = _topic_metadata(consumer, topic, timeout)
        if meta is None or meta.error is not None:
            return {}
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
                for p in sorted(meta.partitions)}
    finally:
        consumer.close()


def committed_offsets(config: Mapping[str, str], topic: str, group: str,
                      timeout: float = 10.0) -> Dict[int, Optional[int]]:
    """partition -> the group's committed offset (None: nothing committed there)."""
    from confluent_kafka import TopicPartition
    numbers = partitions(config, topic, timeout)
    if not numbers:
        return {}
    from confluent_kafka import KafkaError, KafkaException
    moving = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
              KafkaError.COORDINATOR_NOT_AVAILABLE}
    deadline = time.monotonic() + timeout
    consumer = _consumer(config, group)
    try:
        while True:
            try:
                got = consumer.committed([TopicPartition(topic, p) for p in numbers],
                                         timeout=max(0.1, deadline - time.monotonic()))
                break
            except KafkaException as e:
                # A broker that just started (or moved the group) answers NOT_COORDINATOR /
                # COORDINATOR_LOAD_IN_PROGRESS for a moment: retriable, so ask again in time.
                if e.args[0].code() not in moving or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()
    return {tp.partition: (None if tp.offset < 0 else tp.offset) for tp in got}


def lag(ends: Mapping[int, int], committed: Mapping[int, Optional[int]]) -> int:
    """Records behind, all partitions together (nothing committed counts from 0)."""
    return sum(max(0, end - (committed.get(p) or 0)) for p, end in ends.items())


def read_topic(config: Mapping[str, str], topic: str, ends: Optional[Mapping[int, int]] = None,
               timeout: float = 60.0) -> List[Record]:
    """Every record of the topic from offset 0 up to ``ends`` (default: the ends now), in
    partition/offset order. Stops at the ends, so it cannot wait for records that never
    come; raises :class:`KafkaWatchError` if they are not all read within ``timeout``."""
    from confluent_kafka import TopicPartition
    ends = dict(end_offsets(config, topic) if ends is None else ends)
    want = {p: e for p, e in ends.items() if e > 0}
    out: List[Record] = []
    if not want:
        return out
    consumer = _consumer(config)
    position = {p: 0 for p in want}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in want])
        deadline = time.monotonic() + timeout
        while any(position[p] < want[p] for p in want):
            if time.monotonic() > deadline:
                missing = sum(want[p] - position[p] for p in want)
                raise KafkaWatchError(f"read_topic: {missing} records of {topic} not read in {timeout:g}s")
            for m in consumer.consume(500, 0.5):
                if m.error():
                    continue
                p = m.partition()
                if m.offset() >= want.get(p, 0):
                    continue
                position[p] = max(position[p], m.offset() + 1)
                out.append(Record(p, m.offset(), m.timestamp()[1], m.key(), m.value(),
                                  tuple(m.headers() or ())))
    finally:
        consumer.close()
    return sorted(out, key=lambda r: (r.partition, r.offset))
