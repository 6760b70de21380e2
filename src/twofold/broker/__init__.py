"""Events between services: CloudEvents on NATS JetStream.

``cloudevents`` and ``subjects`` are pure Python; ``nats`` (the relay) needs the ``nats`` extra:
``pip install 'twofold[nats]'``. The core never imports this package; this package imports the core.
"""
