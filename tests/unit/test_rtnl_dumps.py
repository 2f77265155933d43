"""Interrupted dumps, from recorded kernel answers (no root): a dump the kernel flags NLM_F_DUMP_INTR is
taken again whole, and one that stays interrupted fails with EAGAIN instead of handing back a mixed set."""

import errno
import struct

from pycni.host import rtnl


class RecordedKernel:
    """Stands in for the netlink socket: answers each request with the next recorded dump, renumbered to the
    request's sequence number as the kernel does."""

    def __init__(self, dumps):
        self.dumps = list(dumps)  # each: a list of (message type, flags, payload)
        self.pending = []

    def send(self, data):
        offset = 0
        while offset < len(data):
            length, _, _, sequence, _ = rtnl.HEADER.unpack_from(data, offset)
            datagram = b""
            for kind, flags, payload in self.dumps.pop(0):
                datagram += rtnl.HEADER.pack(rtnl.HEADER.size + len(payload), kind, flags, sequence, 0) + payload
            self.pending.append(datagram)
            offset += length

    def recv_into(self, buffer):
        datagram = self.pending.pop(0)
        buffer[:len(datagram)] = datagram
        return len(datagram)


def channel(dumps):
    made = rtnl.Channel.__new__(rtnl.Channel)
    made.sock = RecordedKernel(dumps)
    made.sequence, made.dump_retries, made.buffer = 0, 0, bytearray(1 << 16)
    return made


def link(index, name, flags=0):
    payload = rtnl.IFINFO.pack(0, 1, index, 0, 0) + rtnl.name_attribute(rtnl.IFLA_IFNAME, name)
    return (rtnl.RTM_NEWLINK, rtnl.NLM_F_DUMP_INTR | 0x2 if flags else 0x2, payload)  # 0x2: NLM_F_MULTI


DONE = (rtnl.NLMSG_DONE, 0x2, struct.pack("=i", 0))
DONE_INTR = (rtnl.NLMSG_DONE, 0x2 | rtnl.NLM_F_DUMP_INTR, struct.pack("=i", 0))
DUMP = (rtnl.RTM_GETLINK, rtnl.NLM_F_DUMP, rtnl.IFINFO.pack(0, 0, 0, 0, 0))


def names(answer):
    return [rtnl.text(rtnl.attributes(p, rtnl.IFINFO.size)[rtnl.IFLA_IFNAME]) for _, p in answer.check()]


def test_an_interrupted_dump_is_taken_again_whole():
    chan = channel([[link(1, "lo"), link(7, "veth-gone", flags=1), DONE_INTR],
                    [link(1, "lo"), link(8, "veth-new"), DONE]])
    (answer,) = chan.exchange([DUMP])
    assert names(answer) == ["lo", "veth-new"] and chan.dump_retries == 1


def test_the_flag_on_done_alone_counts_too():
    chan = channel([[link(1, "lo"), DONE_INTR], [link(1, "lo"), DONE]])
    assert names(chan.exchange([DUMP])[0]) == ["lo"] and chan.dump_retries == 1


def test_a_dump_interrupted_every_time_fails_with_eagain():
    chan = channel([[link(1, "lo", flags=1), DONE_INTR]] * rtnl.DUMP_ATTEMPTS)
    (answer,) = chan.exchange([DUMP])
    assert answer.error == errno.EAGAIN and "interrupted" in answer.explanation and answer.messages == []
    assert chan.dump_retries == rtnl.DUMP_ATTEMPTS - 1


def test_only_the_interrupted_request_of_a_batch_is_sent_again():
    chan = channel([[link(1, "lo"), DONE], [link(2, "a", flags=1), DONE_INTR], [link(2, "a"), DONE]])
    first, second = chan.exchange([DUMP, DUMP])
    assert names(first) == ["lo"] and names(second) == ["a"] and chan.dump_retries == 1


def test_netlink_reports_a_busy_node_as_try_again_later():
    from pycni.host.netlink import NetlinkFailure

    assert NetlinkFailure("listing links: interrupted", errno.EAGAIN).code == 11
    assert NetlinkFailure("listing links: no", errno.EPERM).code != 11
