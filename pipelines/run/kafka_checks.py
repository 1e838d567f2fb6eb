"""Launch-time checks of a Kafka / Event Hubs read: a stalling read, a missing topic.

Why: both failures are silent otherwise. On Flink, a Kafka read expanded to a
splittable-DoFn read delivers the backlog present at start and then nothing (Beam's
portable Flink runner does not checkpoint and resume such a read in streaming; apache/beam
issues 20979 and 22809): the job runs on, idle, and logs nothing. The launcher's own
expansion service asks for the unbounded-source read on Flink
(``pipelines.run.runners.kafka_expansion_args``); a user's expansion service
(``--kafka-expansion-service``) or Beam's downloaded default may not. The expanded graph
shows which read Kafka IO chose, so the launcher looks at it instead of guessing from flags.

A topic that does not exist when the job starts stops the unbounded-source read at once
("Could not find any partitions"): Kafka IO fixes the partitions it reads when the job
starts, so a topic created later would never be read. The launcher turns that failure into
one line that names the topic (topic names are configuration, not PHI).

Pure functions over a pipeline proto and an error text: no Beam import, no network.
"""
from typing import Any, Optional

#: the primitive read Beam's Flink runner translates natively (UnboundedSource)
LEGACY_READ_URN = "beam:transform:read:v1"
#: KafkaIO.Read's sub-transform names (Java side) for its two expansions
_KAFKA_READ_NAME = "KafkaIO.Read"
_KAFKA_LEGACY_NAME = "ReadFromKafkaViaUnbounded"
#: KafkaUnboundedSource's message when the topic has no partitions (does not exist)
_NO_PARTITIONS = "Could not find any partitions"
#: Runners whose Kafka read stalls after the backlog unless it is the unbounded-source read
_STALLING_RUNNERS = ("flink",)


def kafka_read_keeps_reading(pipeline_proto: Any) -> Optional[bool]:
    """Whether the expanded Kafka read is the unbounded-source read (True) or the splittable
    one (False); None when the pipeline has no expanded Kafka read."""
    names = [(t.unique_name, t.spec.urn) for t in pipeline_proto.components.transforms.values()]
    if not any(_KAFKA_READ_NAME in name for name, _ in names):
        return None
    return any(_KAFKA_LEGACY_NAME in name and urn == LEGACY_READ_URN for name, urn in names)


def stall_warning(runner_key: str, pipeline_proto: Any, user_service: Optional[str]) -> Optional[str]:
    """One line to log at start when the Kafka read on ``runner_key`` will stop after the
    backlog; None when it keeps reading (or the runner checkpoints splittable reads)."""
    if runner_key not in _STALLING_RUNNERS or kafka_read_keeps_reading(pipeline_proto) is not False:
        return None
    whose = (f"the expansion service at {user_service}" if user_service
             else "the expansion service chosen by the launcher")
    return (f"Kafka read on Flink will stop after the messages present at start: {whose} expanded Kafka IO "
            "to its splittable read; start that service with --experiments=use_deprecated_read "
            "(README: Runners, Flink with your own expansion service)")


def missing_topic_error(error_text: str, topic: str, eventhubs: bool) -> Optional[str]:
    """The one line for a run that failed because its topic does not exist; None for other failures."""
    if _NO_PARTITIONS not in (error_text or ""):
        return None
    what = f"Event Hub {topic!r}" if eventhubs else f"Kafka topic {topic!r}"
    return (f"{what} does not exist (no partitions) when the job starts; create it first "
            "(Kafka IO fixes the partitions it reads at start)")
