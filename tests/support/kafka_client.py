"""The tests' Kafka client (confluent-kafka, installed into .venv by `cargo xtask build`).

  produce BOOTSTRAP TOPIC PARTITIONS FILE   each line of FILE a record (key: its JSON "key-hex"
                                            decoded, else its "user",
                                            timestamp: its JSON "ts" in milliseconds if above
                                            0, which librdkafka takes for "now"),
                                            line i to partition i mod PARTITIONS
  timed BOOTSTRAP TOPIC RATE SECONDS        RATE records a second for SECONDS, each value
                                            {"user": …, "sent_ms": the time it was produced}
  delivery BOOTSTRAP TOPIC RATE SECONDS     produces as `timed` while reading the records back;
                                            prints the 50th and 99th percentile of the delay
  read-rate BOOTSTRAP TOPIC                 reads the topic to its end; prints records a second
  consume BOOTSTRAP TOPIC                   every record's value, one per line, read until
                                            nothing more comes for 3 seconds
  sized BOOTSTRAP TOPIC KEY VALUE           one record to partition 0 with a key of KEY bytes
                                            and a value of VALUE bytes ("none": a tombstone)

Records are produced one per batch: tansu 0.6 answers ListOffsets(latest) with the base offset
of the last batch plus one, so only single-record batches give the true end offsets that
`stop-at = "latest"` reads (and `consume` does not trust them for what weir produced).
"""
import json
import sys
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition


def produce(bootstrap, topic, partitions, path):
    producer = Producer({"bootstrap.servers": bootstrap, "batch.num.messages": 1, "linger.ms": 0})
    with open(path, "rb") as lines:
        for i, line in enumerate(lines):
            value = line.rstrip(b"\n")
            try:
                fields = json.loads(value)
                # "key-hex": a key of any bytes (not UTF-8, say); else the "user" field's text.
                key = bytes.fromhex(fields["key-hex"]) if "key-hex" in fields else fields.get("user", "").encode()
                ts = fields.get("ts")
            except (ValueError, AttributeError):
                key, ts = None, None
            timestamp = {"timestamp": ts} if isinstance(ts, int) and ts > 0 else {}
            while True:
                try:
                    producer.produce(topic, key=key, value=value, partition=i % partitions, **timestamp)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
    if producer.flush(60) != 0:
        sys.exit("not every record was delivered")


def sized(bootstrap, topic, key_bytes, value_bytes):
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 100_000_000})
    value = None if value_bytes == "none" else b"v" * int(value_bytes)
    producer.produce(topic, key=b"k" * int(key_bytes), value=value, partition=0)
    if producer.flush(60) != 0:
        sys.exit("the record was not delivered")


def consume(bootstrap, topic):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "weir-test-reader", "enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.topics[topic].partitions])
    out = sys.stdout.buffer
    while (message := consumer.poll(3)) is not None:
        if not message.error():
            out.write(message.value() + b"\n")
    consumer.close()


def timed(bootstrap, topic, rate, seconds):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    start = time.time()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        value = json.dumps({"user": f"u{i % 100}", "sent_ms": int(time.time() * 1000)})
        producer.produce(topic, value=value.encode())
        producer.poll(0)
    producer.flush(60)


def delivery(bootstrap, topic, rate, seconds):
    """The broker's own delay from produced to fetched, with the consumer's fetch settings weir uses."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "weir-bench-delivery", "fetch.wait.max.ms": 100})
    metadata = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in metadata.topics[topic].partitions])
    consumer.poll(1)
    producing = threading.Thread(target=timed, args=(bootstrap, topic, rate, seconds))
    producing.start()
    delays = []
    while len(delays) < int(rate * seconds) and (message := consumer.poll(10)) is not None:
        if not message.error():
            delays.append(time.time() * 1000 - json.loads(message.value())["sent_ms"])
    producing.join()
    delays.sort()
    print(f"{delays[len(delays) // 2]:.0f} {delays[int(len(delays) * 0.99)]:.0f}")


def read_rate(bootstrap, topic):
    """The broker's own read limit, measured with librdkafka's batched consume."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "weir-bench-reader", "enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.topics[topic].partitions])
    count, first, last = 0, None, None
    while messages := consumer.consume(10000, 2.0):
        now = time.time()
        first = first or now
        last = now
        count += len(messages)
    consumer.close()
    print(f"{count} {last - first:.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif sys.argv[1] == "timed":
        timed(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
    elif sys.argv[1] == "delivery":
        delivery(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
    elif sys.argv[1] == "read-rate":
        read_rate(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "sized":
        sized(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        consume(sys.argv[2], sys.argv[3])
