"""How a service wires its events: the relay that publishes its log, and its
subscriptions to other services' logs (stream consumer, catch-up from the
producer's feed, dead letters), with the settings' bounds."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.kit.catchup import Catchup, Feed
from services.kit.dead_letters import Applier, BatchHandler, DeadLetterDesk, DeadLetters
from services.kit.events import OUTBOX_RELAY_QUERY, OutboxRelay, StreamConsumer, stream_name
from services.kit.server import Resources


async def start_relay(resources: Resources, service: str, query: str = "") -> OutboxRelay:
    """Publishes the service's log (its outbox, or `query` over an event
    store, which is never pruned) to its stream."""
    settings = resources.settings
    relay = OutboxRelay(
        resources.database.pool,
        resources.redis,
        stream_name(settings.redis_prefix, service),
        f"{service}.events",
        query or OUTBOX_RELAY_QUERY,
        max_length=settings.stream_max_length,
        retention=None if query else dt.timedelta(days=settings.event_retention_days),
    )
    await relay.start()
    resources.on_stop.append(relay.stop)
    return relay


@dataclass(frozen=True)
class Subscription:
    """A producer's events this service applies."""

    source: str  # the producing service
    handler: BatchHandler
    feed: Feed  # the producer's log, for catching up
    count: int = 100  # events per read


async def subscribe(
    resources: Resources, consumer: str, subscriptions: Sequence[Subscription], dead_letters_response: type[Any]
) -> DeadLetterDesk:
    """Starts a consumer of each subscription; the desk of their dead letters."""
    settings = resources.settings
    pool = resources.database.pool
    letters = DeadLetters(pool, consumer, f"{consumer}DeadLetters")
    appliers: dict[str, Applier] = {}
    for subscription in subscriptions:
        applier = Applier(
            subscription.handler,
            letters,
            subscription.source,
            attempts=settings.dead_letter_attempts,
            after_seconds=settings.dead_letter_after_seconds,
        )
        catchup = Catchup(
            pool,
            consumer,
            subscription.source,
            subscription.feed,
            applier,
            grace=settings.catchup_grace_seconds,
            probe=settings.catchup_probe_seconds,
            processed_retention=dt.timedelta(days=4 * settings.event_retention_days),
        )
        stream_consumer = StreamConsumer(
            resources.redis,
            stream_name(settings.redis_prefix, subscription.source),
            consumer,
            f"{consumer}-{os.getpid()}",
            applier,
            count=subscription.count,
            health=resources.health,
            catchup=catchup,
        )
        await catchup.start()
        await stream_consumer.start()
        resources.on_stop += [stream_consumer.stop, catchup.stop]
        appliers[subscription.source] = applier
    return DeadLetterDesk(letters, dead_letters_response, appliers)
