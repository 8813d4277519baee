"""The health feed out as Standard Webhooks: every message of the health topic, signed, to each subscriber of
`CHURNSIGNAL_FEED_WEBHOOKS`.

- config.py: the subscribers as configured, checked at start (errors name the problem, never a URL or a secret);
- delivery.py: one signed POST and how its answer is classified (retry, or dead letter);
- sender.py: one consumer per subscriber, in order per account, offsets committed once delivered.
"""
