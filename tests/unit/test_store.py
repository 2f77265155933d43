"""host-local's store and allocator on real files in a temporary directory."""

import ipaddress
import os

import pytest

from pycni.plugins.host_local.allocator import AllocationError, allocate, free_addresses
from pycni.plugins.host_local.ranges import parse_range_set
from pycni.plugins.host_local.store import DiskStore

A = ipaddress.ip_address


@pytest.fixture
def store(tmp_path):
    s = DiskStore(str(tmp_path), "net")
    os.makedirs(s.directory)
    return s


def test_reference_file_format(store):
    assert store.reserve(A("10.0.0.2"), "abc", "eth0", 0)
    with open(os.path.join(store.directory, "10.0.0.2"), "rb") as f:
        assert f.read() == b"abc\r\neth0"
    with open(os.path.join(store.directory, "last_reserved_ip.0")) as f:
        assert f.read() == "10.0.0.2"
    assert oct(os.stat(os.path.join(store.directory, "10.0.0.2")).st_mode & 0o777) == "0o600"
    assert not store.reserve(A("10.0.0.2"), "other", "eth0", 0)
    assert [n for n in os.listdir(store.directory) if n.startswith(".")] == []


def test_legacy_and_whitespace_files_are_read(store):
    with open(os.path.join(store.directory, "10.0.0.7"), "w") as f:
        f.write("  legacyid \n")
    with open(os.path.join(store.directory, "fd00::7"), "w") as f:
        f.write("abc\r\neth1\n")
    found = {str(r.address): (r.container_id, r.ifname) for r in store.reservations()}
    assert found == {"10.0.0.7": ("legacyid", ""), "fd00::7": ("abc", "eth1")}
    assert [r for r in store.reservations() if r.belongs_to("legacyid", "eth0")]


def test_allocation_round_robin_and_exhaustion(store):
    rs = parse_range_set([{"subnet": "10.0.0.0/29"}], "s")
    got = [str(allocate(store, rs, 0, f"c{i}", "eth0", None)[1]) for i in range(5)]
    assert got == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    assert free_addresses(rs, [r.address for r in store.reservations()]) == 0
    with pytest.raises(AllocationError, match="no IP addresses available in range set: 10.0.0.1-10.0.0.6"):
        allocate(store, rs, 0, "c9", "eth0", None)
    store.release(A("10.0.0.3"))
    assert str(allocate(store, rs, 0, "c9", "eth0", None)[1]) == "10.0.0.3"


def test_duplicate_allocation_is_refused(store):
    rs = parse_range_set([{"subnet": "10.0.0.0/29"}], "s")
    allocate(store, rs, 0, "c1", "eth0", None)
    with pytest.raises(AllocationError, match="duplicate"):
        allocate(store, rs, 0, "c1", "eth0", None)
    allocate(store, rs, 0, "c1", "eth1", None)


def test_requested_addresses(store):
    rs = parse_range_set([{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.20"}], "s")
    assert str(allocate(store, rs, 0, "c1", "eth0", A("10.0.0.15"))[1]) == "10.0.0.15"
    with pytest.raises(AllocationError, match="not available"):
        allocate(store, rs, 0, "c2", "eth0", A("10.0.0.15"))
    with pytest.raises(AllocationError, match="not in range set"):
        allocate(store, rs, 0, "c2", "eth0", A("10.0.0.5"))
    with pytest.raises(AllocationError, match="not in range set"):
        allocate(store, rs, 0, "c2", "eth0", A("10.0.0.21"))
    gw = parse_range_set([{"subnet": "10.1.0.0/24"}], "s")
    with pytest.raises(AllocationError, match="gateway"):
        allocate(store, gw, 0, "c2", "eth0", A("10.1.0.1"))


def test_stale_temporaries_of_dead_processes_are_removed(store):
    dead = os.path.join(store.directory, ".pycni-tmp-999999999-10.0.0.2")
    live = os.path.join(store.directory, f".pycni-tmp-{os.getpid()}-10.0.0.3")
    for path in (dead, live):
        open(path, "w").close()
    store.remove_stale_temporaries()
    assert not os.path.exists(dead) and os.path.exists(live)


@pytest.fixture
def remembering(monkeypatch):
    """The store as the service runs it: reservations kept between calls, by file identity."""
    from pycni.plugins.host_local import store as store_module

    monkeypatch.setattr(store_module, "_remembered", {})


def _holders(store) -> dict[str, str]:
    return {str(r.address): r.container_id for r in store.reservations()}


def test_remembered_reservations_follow_every_change_of_the_files(store, remembering):
    """A kept view must never outlive the file it was read from: a release, a re-reservation of the same
    address by another pod (a new file at the same name), a reference-style rewrite in place, a foreign
    file, and the lock/last_reserved files that are not reservations."""
    assert store.reserve(A("10.0.0.2"), "pod-a", "eth0", 0)
    assert store.reserve(A("10.0.0.3"), "pod-b", "eth0", 0)
    assert _holders(store) == {"10.0.0.2": "pod-a", "10.0.0.3": "pod-b"}
    store.release(A("10.0.0.2"))
    assert store.reserve(A("10.0.0.2"), "pod-c", "eth0", 0)
    assert _holders(store) == {"10.0.0.2": "pod-c", "10.0.0.3": "pod-b"}
    path = os.path.join(store.directory, "10.0.0.3")
    with open(path, "w") as f:  # the reference writes in place: same inode, new content
        f.write("pod-dd\r\neth0")
    assert _holders(store) == {"10.0.0.2": "pod-c", "10.0.0.3": "pod-dd"}
    with open(os.path.join(store.directory, "fd00::9"), "w") as f:
        f.write("pod-e\r\neth1")
    store.release(A("10.0.0.2"))
    assert _holders(store) == {"10.0.0.3": "pod-dd", "fd00::9": "pod-e"}


def test_remembered_reservations_still_refuse_a_second_address(store, remembering):
    range_set = parse_range_set([{"subnet": "10.0.0.0/29"}], "ranges[0]")
    allocate(store, range_set, 0, "pod-a", "eth0", None)
    store.reservations()  # remembered now
    with pytest.raises(AllocationError, match="duplicate allocation"):
        allocate(store, range_set, 0, "pod-a", "eth0", None)
