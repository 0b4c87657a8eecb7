"""The tests' Kafka client (confluent-kafka, installed into .venv by `cargo xtask build`).

  produce BOOTSTRAP TOPIC PARTITIONS FILE   each line of FILE a record (key: its JSON "user"),
                                            line i to partition i mod PARTITIONS
  consume BOOTSTRAP TOPIC                   every record's value, one per line, read until
                                            nothing more comes for 3 seconds

Records are produced one per batch: tansu 0.6 answers ListOffsets(latest) with the base offset
of the last batch plus one, so only single-record batches give the true end offsets that
`stop-at = "latest"` reads (and `consume` does not trust them for what weir produced).
"""
import json
import sys

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition


def produce(bootstrap, topic, partitions, path):
    producer = Producer({"bootstrap.servers": bootstrap, "batch.num.messages": 1, "linger.ms": 0})
    with open(path, "rb") as lines:
        for i, line in enumerate(lines):
            value = line.rstrip(b"\n")
            try:
                key = json.loads(value).get("user", "").encode()
            except (ValueError, AttributeError):
                key = None
            while True:
                try:
                    producer.produce(topic, key=key, value=value, partition=i % partitions)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
    if producer.flush(60) != 0:
        sys.exit("not every record was delivered")


def consume(bootstrap, topic):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "weir-test-reader", "enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.topics[topic].partitions])
    out = sys.stdout.buffer
    while (message := consumer.poll(3)) is not None:
        if not message.error():
            out.write(message.value() + b"\n")
    consumer.close()


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        consume(sys.argv[2], sys.argv[3])
