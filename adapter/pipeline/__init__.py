"""The pipeline between the spool and every destination, the same for both directions.

``Instance`` (what travels) -> stages (rewrite or drop) -> ``Router`` (rules -> destination
names) -> one durable outbox per destination, drained by its own ``DeliveryService``.
"""
