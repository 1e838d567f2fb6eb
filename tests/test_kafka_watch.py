"""``pipelines.simulator.kafka_watch``: what the stream benches and tests read from the broker.

A broker that just started answers a group's first offset fetch with NOT_COORDINATOR for a
moment (seen: ``bench_stream_load`` failed at its warm-up). That answer is retried until the
call's timeout; an error that is not about the group's coordinator is not."""
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipelines.simulator import kafka_watch


class _Consumer:
    """Answers ``committed`` with the given errors first, then offsets (a stand-in for
    librdkafka's consumer: the broker's transient refusal cannot be provoked on demand)."""

    def __init__(self, errors):
        self.errors, self.calls, self.closed = list(errors), 0, False

    def committed(self, partitions, timeout):
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return [TopicPartition(tp.topic, tp.partition, 7 if tp.partition == 0 else -1001) for tp in partitions]

    def close(self):
        self.closed = True


@pytest.fixture
def consumer(monkeypatch):
    made = {}

    def install(errors):
        made["c"] = _Consumer(errors)
        monkeypatch.setattr(kafka_watch, "partitions", lambda config, topic, timeout: [0, 1])
        monkeypatch.setattr(kafka_watch, "_consumer", lambda config, group: made["c"])
        return made["c"]
    return install


def test_a_moving_coordinator_is_asked_again(consumer):
    c = consumer([KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS])
    assert kafka_watch.committed_offsets({}, "t", "g", timeout=5) == {0: 7, 1: None}
    assert c.calls == 3 and c.closed


def test_other_errors_and_the_timeout_still_raise(consumer):
    c = consumer([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException):
        kafka_watch.committed_offsets({}, "t", "g", timeout=5)
    assert c.calls == 1 and c.closed
    c = consumer([KafkaError.NOT_COORDINATOR] * 1000)
    with pytest.raises(KafkaException):
        kafka_watch.committed_offsets({}, "t", "g", timeout=0.5)
    assert 1 < c.calls < 1000 and c.closed
