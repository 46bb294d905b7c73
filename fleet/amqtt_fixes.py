"""amqtt 0.12.1's Broker with three bugs fixed, for fleet/embedded_broker.py (our code only:
site-packages stays untouched). Imported lazily: only the demo and test side needs amqtt.

1. Iteration race. amqtt loops over its subscription table and awaits inside the loop: on
   CONNECT (`_handle_client_session`: `for topic in self._subscriptions: await ...`, publishing
   retained messages) and on every broadcast (`_run_broadcast`: awaits the topic filter plugins).
   A SUBSCRIBE from another client landing at such an await adds a key, and the resumed loop
   raises "dictionary changed size during iteration": the connecting client's task dies and
   its socket is left open. Fix: the table is a `_SubscriptionTable`, whose iteration walks a
   snapshot (keys, and each filter's subscriber list), so every loop over it, present or future,
   is immune. Lookups and mutations still hit the live table.
2. Stray retained messages. The same CONNECT loop sends the newcomer the retained messages of
   every filter in the table, i.e. of other clients' subscriptions (it is meant for a resumed
   session's own filters). Fix: on CONNECT, only filters the session itself subscribes to.
3. Stray sockets. `Broker.shutdown()` stops the handlers of registered sessions only; a
   connection still in its CONNECT exchange (or one whose task died) keeps its socket until the
   garbage collector finds it (ResourceWarning). Fix: every accepted stream is tracked and closed
   when its task ends; `close_connections()` closes what is left after `shutdown()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import ItemsView, Iterator, ValuesView
from typing import Any

from amqtt.broker import Broker

__all__ = ["FixedBroker"]

_Subscribers = list[tuple[Any, int]]  # (amqtt Session, granted QoS) per topic filter


class _SubscriptionTable(dict[str, _Subscribers]):
    """amqtt's `topic filter -> [(session, qos)]` table; iterating it walks a snapshot."""

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().keys()))

    def items(self) -> ItemsView[str, _Subscribers]:  # type: ignore[override]
        return self._snapshot().items()

    def values(self) -> ValuesView[_Subscribers]:  # type: ignore[override]
        return self._snapshot().values()

    def _snapshot(self) -> dict[str, _Subscribers]:
        # lists copied too: amqtt's UNSUBSCRIBE pops from them while a broadcast loop awaits
        return {key: list(subs) for key, subs in list(super().items())}


class FixedBroker(Broker):  # type: ignore[misc]  # amqtt ships no type information
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions: _SubscriptionTable = _SubscriptionTable()
        self._streams: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Any
    ) -> None:
        # Called on SUBSCRIBE (the session is then in the filter's list) and, with every filter
        # in the table, on CONNECT: only the session's own filters get their retained messages.
        subscribers = self._subscriptions.get(subscription[0], [])
        if any(sub.client_id == session.client_id for sub, _ in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._streams[writer] = task
        try:
            await super().stream_connected(reader, writer, listener_name)
        finally:
            self._streams.pop(writer, None)
            writer.close()  # idempotent; amqtt leaves it open when the CONNECT exchange fails

    async def close_connections(self, timeout: float = 5.0) -> None:
        """After `shutdown()`: close every accepted socket still open and end its task."""
        streams = dict(self._streams)
        for writer in streams:
            writer.close()  # the task's reader sees EOF and ends
        tasks = set(streams.values()) - {asyncio.current_task()}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for writer in streams:
            with contextlib.suppress(OSError):  # ConnectionError included
                await writer.wait_closed()  # the transport releases its socket here
