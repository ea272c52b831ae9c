"""Turnstile's AMQP listener driven by pika, the way a newcomer to it would write the client.

Usage: python3 pika_client.py PORT   (host from PIKA_TEST_HOST, default 127.0.0.1; queue names get
PIKA_TEST_SUFFIX appended). Exits non-zero with a message on the first mismatch; prints
"pika: all checks passed" when everything matched. Run by crates/cli/tests/amqp.rs.
"""

import os
import sys

import pika
import pika.exceptions


def fail(message):
    print(f"pika: MISMATCH: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def main():
    if len(sys.argv) != 2:
        fail("usage: pika_client.py PORT")
    port = int(sys.argv[1])
    host = os.environ.get("PIKA_TEST_HOST", "127.0.0.1")
    suffix = os.environ.get("PIKA_TEST_SUFFIX", "")
    tasks = "pika-tasks" + suffix
    left = "pika-left" + suffix

    params = pika.ConnectionParameters(
        host=host,
        port=port,
        credentials=pika.PlainCredentials("guest", "guest"),
        socket_timeout=10,
        blocked_connection_timeout=10,
    )
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    channel.confirm_delivery()

    # A queue with arguments, declared twice the same way (idempotent).
    arguments = {"x-max-length": 100, "x-message-ttl": 60000}
    declared = channel.queue_declare(queue=tasks, durable=True, arguments=arguments)
    check(declared.method.queue == tasks, f"declared {declared.method.queue!r}")
    check(declared.method.message_count == 0, f"new queue holds {declared.method.message_count}")
    channel.queue_declare(queue=tasks, durable=True, arguments=arguments)

    # Persistent publishes, each confirmed (basic_publish raises if nacked or returned).
    for n in range(5):
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="text/plain",
            headers={"n": n, "source": "pika"},
        )
        channel.basic_publish(exchange="", routing_key=tasks, body=f"task {n}", properties=properties, mandatory=True)

    # One with basic_get.
    method, properties, body = channel.basic_get(queue=tasks, auto_ack=False)
    check(method is not None, "basic_get found nothing")
    check(body == b"task 0", f"basic_get body {body!r}")
    check(method.message_count == 4, f"basic_get message_count {method.message_count}")
    check(not method.redelivered, "basic_get: redelivered on a first delivery")
    check(properties.delivery_mode == 2, f"delivery_mode {properties.delivery_mode}")
    check(properties.content_type == "text/plain", f"content_type {properties.content_type!r}")
    check(properties.headers == {"n": 0, "source": b"pika"} or properties.headers == {"n": 0, "source": "pika"},
          f"headers {properties.headers!r}")
    channel.basic_ack(delivery_tag=method.delivery_tag)

    # The rest with basic_consume and a callback that acks.
    received = []

    def on_message(ch, method, properties, body):
        received.append((body, properties.headers.get("n")))
        ch.basic_ack(delivery_tag=method.delivery_tag)
        if len(received) == 4:
            ch.stop_consuming()

    def too_slow():
        fail(f"basic_consume: only {len(received)} of 4 messages within 10 s")

    channel.basic_qos(prefetch_count=2)
    tag = channel.basic_consume(queue=tasks, on_message_callback=on_message)
    timer = connection.call_later(10, too_slow)
    channel.start_consuming()
    connection.remove_timeout(timer)
    expected = [(f"task {n}".encode(), n) for n in range(1, 5)]
    check(received == expected, f"consumed {received!r}")
    channel.basic_cancel(tag)

    # Everything acked: the queue is empty.
    check(channel.basic_get(queue=tasks, auto_ack=True) == (None, None, None), "queue not empty after acks")
    passive = channel.queue_declare(queue=tasks, passive=True)
    check(passive.method.message_count == 0, f"passive declare: {passive.method.message_count} left")

    # A mandatory publish to nowhere is returned.
    try:
        channel.basic_publish(exchange="", routing_key="nowhere" + suffix, body=b"lost", mandatory=True)
        fail("a mandatory publish to nowhere was not returned")
    except pika.exceptions.UnroutableError:
        pass

    # Redeclaring with other arguments closes the channel with 406.
    try:
        channel.queue_declare(queue=tasks, durable=True, arguments={"x-max-length": 5})
        fail("redeclare with other arguments succeeded")
    except pika.exceptions.ChannelClosedByBroker as e:
        check(e.reply_code == 406, f"redeclare: reply code {e.reply_code} {e.reply_text}")

    # The connection goes on: a new channel leaves a message for the Rust side.
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(queue=left, durable=True)
    channel.basic_publish(exchange="", routing_key=left, body=b"left by pika",
                          properties=pika.BasicProperties(delivery_mode=2))
    connection.close()
    print("pika: all checks passed")


if __name__ == "__main__":
    main()
