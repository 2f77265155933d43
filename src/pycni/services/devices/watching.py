"""A resource's watch kept running for as long as its resource is served, by the device plugin daemon and by
`pycni dra` alike: a watch that ends or fails (a netlink error, a vanished sysfs entry) is said and started
again, or the kubelet and the ResourceSlice pool would stop hearing of health changes."""

from __future__ import annotations

import logging
from collections.abc import Callable

from pycni.services.devices.model import LOGGER, Resource

log = logging.getLogger(LOGGER)


class Retired(BaseException):
    """Raised by a watch's `changed()` once its resource is no longer served (replaced by a reload, removed):
    the watch ends. A BaseException, so no `except Exception` inside the watch swallows it."""


def keep_watching(resource: Resource, changed: Callable[[], None], *, serving: Callable[[], bool],
                  pause: Callable[[], bool]) -> None:
    """Run `resource.watch(changed)` while `serving()`. A watch that returns or fails is said and, after
    `pause()` (True: stop instead), started again, which reads every device again; `changed()` is then called
    once for what changed meanwhile. `changed` may raise `Retired` to end it."""
    assert resource.watch is not None
    try:
        while serving():
            try:
                resource.watch(changed)
                if serving():
                    log.warning("watching %s ended; starting again", resource.name)
            except Exception as e:  # noqa: BLE001 - any failure: say so, keep the health stream alive
                if serving():
                    log.error("watching %s failed (%s: %s); starting again", resource.name, type(e).__name__, e)
            if not serving() or pause():
                return
            changed()
    except Retired:
        return
