#!/usr/bin/env python3
"""Device-message simulator: an archive file, or a live stream to Pub/Sub, Event Hubs or Kafka.

Without --rate/--count/--duration and --to file it writes the deterministic archive (JSON lines
of message bodies from --start, every device sending every type; same arguments -> same bytes:
the demo's templates/sample/messages.jsonl is `--bad 2`). With any of them it sends live
messages with current timestamps, each device its own kind's readings (watch, blood-pressure
cuff, scale; pipelines/simulator/devices.py), device properties as message properties / attributes /
headers, at a steady --rate, until --count messages or --duration seconds.

  --to pubsub    --pubsub-topic projects/P/topics/T     (honours PUBSUB_EMULATOR_HOST)
  --to eventhubs [--eventhub-name HUB]                  (AMQP; EVENTHUB_CONNECTION_STRING)
  --to kafka     --kafka-topic T --kafka-bootstrap-servers H:P
  --to kafka     --kafka-topic HUB --eventhubs          (Event Hubs' Kafka endpoint, SASL_SSL;
                                                         EVENTHUB_CONNECTION_STRING)

It prints what it sent (counts per measurement type) on stderr; never ids, bodies or secrets.
"""
import argparse
import pathlib
import sys
import time
from fractions import Fraction

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from pipelines.simulator import devices as simulator  # noqa: E402


def _bad(text: str) -> float:
    value = float(text)
    if value < 0 or (value >= 1 and value != int(value)):
        raise argparse.ArgumentTypeError("--bad is a fraction in [0, 1) or a whole count")
    return value


def _config(text: str):
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError("--kafka-config is KEY=VALUE")
    lowered = name.lower()
    if "password" in lowered or "jaas" in lowered or "secret" in lowered:
        raise argparse.ArgumentTypeError("secrets are never options: use EVENTHUB_CONNECTION_STRING")
    return name, value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--to", choices=("file", "pubsub", "eventhubs", "kafka"), default="file")
    p.add_argument("--devices", type=int, default=simulator.DEFAULT_DEVICES)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--bad", type=_bad, default=0,
                   help="malformed messages: a fraction in [0, 1) of those sent, or a whole count "
                        "(archive; live with --count)")
    live = p.add_argument_group("live stream")
    live.add_argument("--rate", type=float, help="messages per second, steady")
    live.add_argument("--count", type=int, help="stop after N messages")
    live.add_argument("--duration", type=float, help="stop after S seconds")
    archive = p.add_argument_group("archive (--to file without --rate/--count/--duration)")
    archive.add_argument("--minutes", type=int, default=120)
    archive.add_argument("--start", default="2026-01-05T08:00:00Z")
    out = p.add_argument_group("destinations")
    out.add_argument("--output", default="-", help="--to file: path, - for stdout")
    out.add_argument("--envelope", action="store_true",
                     help="--to file, live: write {Body, Properties} lines (--input-format envelope)")
    out.add_argument("--pubsub-topic")
    out.add_argument("--eventhub-name")
    out.add_argument("--kafka-topic")
    out.add_argument("--kafka-bootstrap-servers")
    out.add_argument("--kafka-partition", type=int,
                     help="--to kafka: send every message to this partition (default: by device key)")
    out.add_argument("--eventhubs", action="store_true",
                     help="--to kafka: Event Hubs' Kafka endpoint from EVENTHUB_CONNECTION_STRING")
    out.add_argument("--kafka-config", type=_config, action="append", default=[],
                     help="extra Kafka client setting KEY=VALUE (e.g. ssl.ca.location=ca.pem)")
    return p


def _sender(a, p):
    from pipelines.simulator import senders
    if a.to == "file":
        return senders.FileSender(a.output, envelope=a.envelope)
    if a.to == "pubsub":
        if not a.pubsub_topic:
            p.error("--to pubsub needs --pubsub-topic projects/P/topics/T")
        return senders.PubSubSender(a.pubsub_topic)
    if a.to == "eventhubs":
        return senders.EventHubsSender(a.eventhub_name)
    if not a.kafka_topic:
        p.error("--to kafka needs --kafka-topic")
    return senders.KafkaSender(a.kafka_topic, a.kafka_bootstrap_servers, dict(a.kafka_config),
                               eventhubs=a.eventhubs, partition=a.kafka_partition)


def main(argv=None) -> int:
    p = parser()
    a = p.parse_args(argv)
    live = a.rate is not None or a.count is not None or a.duration is not None
    if a.to == "file" and not live:
        if a.bad and a.bad < 1:
            p.error("the archive takes --bad as a whole count")
        lines = simulator.archive_lines(a.devices, a.minutes, a.start, a.seed, int(a.bad))
        out = sys.stdout if a.output == "-" else open(a.output, "w", encoding="utf-8")
        out.write("\n".join(lines) + "\n")
        if out is not sys.stdout:
            out.close()
        return 0
    fraction = a.bad
    if fraction >= 1:
        if not a.count:
            p.error("a whole --bad count needs --count; use a fraction with --duration")
        fraction = Fraction(int(a.bad), a.count)
        if fraction >= 1:
            p.error("--bad must be less than --count")
    from pipelines.simulator.senders import SenderError
    counts = simulator.SentCounts()
    try:
        sender = _sender(a, p)
        try:
            # at a rate, readings are stamped with their scheduled times (scheduled_clock's why)
            clock = simulator.scheduled_clock(a.rate) if a.rate else time.time
            for batch in simulator.paced(simulator.live_messages(a.devices, a.seed, fraction, clock=clock),
                                         a.rate, a.count, a.duration):
                sender.send(batch)
                counts.add(batch)
        finally:
            sender.close()
    except SenderError as err:
        print(f"simulate_devices: {err} ({counts.summary()})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    print(f"simulate_devices: to={a.to} {counts.summary()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
