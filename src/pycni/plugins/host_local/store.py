"""host-local's on-disk store, in the reference plugin's format.

`<dataDir>/<network>/<ip>` holds `<containerID>\\r\\n<ifname>` for each reserved
address, `last_reserved_ip.<N>` the last address handed out from range-set N,
and `lock` serialises callers. A node can switch between the reference binary
and pycni without losing reservations.

Unlike the reference, every file appears whole or not at all: content is
written to a temporary file first and then hard-linked (a reservation, which
must fail if the address is taken) or renamed (last_reserved_ip) into place,
so a process killed at any point never leaves a half-written reservation.

An ADD looks through every reservation (a container gets one address per
range set, as in the reference): with 500 pods that is 500 files, ~10 ms of
reads. A long-lived process (the pycni service: `remember_reservations`)
keeps what it read, by file identity (inode, mtime, ctime, size: a file
released and taken again by another pod is another file), and reads again
only the files that changed: one directory read and a stat per file, ~2 ms.
"""

from __future__ import annotations

import ipaddress
import os
from contextlib import contextmanager
from dataclasses import dataclass

from pycni.host.files import TEMPORARY_PREFIX, create_file, overwrite_file, remove_file
from pycni.host.lock import file_lock

LINE_BREAK = "\r\n"
LAST_RESERVED_PREFIX = "last_reserved_ip."
TEMP_PREFIX = TEMPORARY_PREFIX  # a leftover of a call that died between writing and renaming

FileIdentity = tuple[int, int, int, int]  # inode, mtime ns, ctime ns, size
_remembered: dict[str, dict[str, tuple[FileIdentity, Reservation | None]]] | None = None


def remember_reservations() -> None:
    """From now on this process keeps the reservations it read, and reads again only files that changed."""
    global _remembered
    if _remembered is None:
        _remembered = {}


@dataclass(frozen=True, slots=True)
class Reservation:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    container_id: str
    ifname: str  # "" for legacy files that hold only the container ID

    def belongs_to(self, container_id: str, ifname: str) -> bool:
        return self.container_id == container_id and self.ifname in (ifname, "")


class DiskStore:
    def __init__(self, data_dir: str, network: str) -> None:
        self.directory = os.path.join(data_dir, network)

    @contextmanager
    def locked(self, timeout: float = 30.0):
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        with file_lock(os.path.join(self.directory, "lock"), timeout):
            yield self

    def reserve(self, address, container_id: str, ifname: str, set_index: int) -> bool:
        """Claim `address`; False when it is already taken."""
        target = os.path.join(self.directory, str(address))
        created = create_file(target, (container_id + LINE_BREAK + ifname).encode())
        if created:  # a hint only, read under the lock: written in place (a torn one reads as none: start over)
            overwrite_file(os.path.join(self.directory, f"{LAST_RESERVED_PREFIX}{set_index}"), str(address).encode())
        return created

    def release(self, address) -> None:
        remove_file(os.path.join(self.directory, str(address)))

    def last_reserved(self, set_index: int):
        try:
            with open(os.path.join(self.directory, f"{LAST_RESERVED_PREFIX}{set_index}"), encoding="utf-8") as f:
                return ipaddress.ip_address(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    def reservations(self) -> list[Reservation]:
        if _remembered is not None:
            return self._reservations_remembered(_remembered)
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return [r for r in map(self._reservation_named, names) if r is not None]

    def _reservations_remembered(self, remembered: dict) -> list[Reservation]:
        """`reservations`, reading only the files not seen before as they are now."""
        known = remembered.get(self.directory, {})
        now: dict[str, tuple[FileIdentity, Reservation | None]] = {}
        try:
            entries = os.scandir(self.directory)
        except FileNotFoundError:
            remembered.pop(self.directory, None)
            return []
        with entries:
            for entry in entries:
                if entry.name.startswith(TEMP_PREFIX):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                identity = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
                seen = known.get(entry.name)
                if seen is not None and seen[0] == identity:
                    now[entry.name] = seen
                    continue
                now[entry.name] = (identity, self._reservation_named(entry.name))
        remembered[self.directory] = now
        return [reservation for _, reservation in now.values() if reservation is not None]

    def _reservation_named(self, name: str) -> Reservation | None:
        """The reservation in the file `name`; None for a file that is not one (lock, last_reserved_ip.N,
        temporary files) or is gone."""
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return None
        return self.reservation(address)

    def reservation(self, address) -> Reservation | None:
        """Who holds `address`, or None when it is free."""
        try:
            with open(os.path.join(self.directory, str(address)), encoding="utf-8", errors="replace") as f:
                content = f.read().strip()
        except FileNotFoundError:
            return None
        container_id, _, ifname = content.replace(LINE_BREAK, "\n").partition("\n")
        return Reservation(address, container_id.strip(), ifname.strip())

    def remove_stale_temporaries(self) -> None:
        """Temporary files of processes killed mid-write (harmless, but tidy them)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(TEMP_PREFIX):
                pid = name[len(TEMP_PREFIX):].split("-", 1)[0]
                if not pid.isdigit() or not os.path.exists(f"/proc/{pid}"):
                    try:
                        os.unlink(os.path.join(self.directory, name))
                    except FileNotFoundError:
                        pass
