"""What can change a PCI resource, as it happens: link events (carrier, netdevs coming and going) and the
kernel's uevents (`sriov_numvfs` changed, a driver bound), each subscription read in a thread of its own and
handed to the resource's watch in bursts."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from pycni.host import netlink, uevent
from pycni.services.devices.model import LOGGER

log = logging.getLogger(LOGGER)

SUBSCRIBE_TIMEOUT = 10.0
Subscribe = Callable[[], AbstractContextManager[Iterator[Any]]]
SUBSCRIPTIONS: tuple[Subscribe, ...] = (netlink.link_events, uevent.events)


@contextmanager
def device_events(name: str, subscriptions: tuple[Subscribe, ...] = SUBSCRIPTIONS) -> Iterator[Iterator[list[Any]]]:
    """Subscribed when the block starts (a scan inside it misses nothing that follows), the events in bursts:
    what arrived together, one list. The bursts end when a subscription does (the watch is started again)."""
    wake: queue.Queue[object] = queue.Queue()
    stop = threading.Event()
    subscribed = []
    for subscribe in subscriptions:
        ready = threading.Event()
        subscribed.append(ready)
        threading.Thread(target=_forward, args=(subscribe, ready, stop, wake), daemon=True,
                         name=f"events {name}").start()
    try:
        for ready in subscribed:
            ready.wait(SUBSCRIBE_TIMEOUT)
        yield _bursts(wake)
    finally:
        stop.set()


def _bursts(wake: queue.Queue[object]) -> Iterator[list[Any]]:
    while True:
        burst = [wake.get()]
        while not wake.empty():
            burst.append(wake.get_nowait())
        if None in burst:  # a subscription ended
            return
        yield burst


def _forward(subscribe: Subscribe, ready: threading.Event, stop: threading.Event, wake: queue.Queue[object]) -> None:
    """Subscribe in this thread (pyroute2's sockets are read in the thread that made them) and pass every
    event on, until the watch that started it has stopped."""
    try:
        with subscribe() as events:
            ready.set()
            for event in events:
                if stop.is_set():
                    return
                wake.put(event)
    except Exception as e:  # noqa: BLE001 - the subscription failed: the watch starts again
        log.error("device events: %s: %s", type(e).__name__, e)
    finally:
        ready.set()
    wake.put(None)
