"""The flow queues' classic BPF classifier (flows.FLOW_HASH), run by a classic BPF interpreter written here
over packets built here: every TCP or UDP packet, IPv4 (any header length) or IPv6, goes to the class
`flows.flow_queue` names for its ports, the same both ways; anything else (ARP, ICMP, IPv4 fragments) is left
to HTB's default class (the program answers 0)."""

import socket
import struct

import pytest

from pycni.plugins.bandwidth import flows


def run(program, packet: bytes) -> int:
    """Classic BPF as the kernel runs it for cls_bpf (the subset the program uses); a load past the end of
    the packet ends it with 0, as the kernel does."""
    a = x = 0
    memory = [0] * 16
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        kind, size, mode = code & 0x07, code & 0x18, code & 0xE0
        if kind in (0x00, 0x01) and mode in (0x20, 0x40, 0xA0):  # ld / ldx from the packet
            offset = k + (x if mode == 0x40 else 0)
            width = {0x00: 4, 0x08: 2, 0x10: 1}[size]
            if offset + width > len(packet):
                return 0
            value = int.from_bytes(packet[offset:offset + width], "big")
            if mode == 0xA0:
                x = 4 * (value & 0xF)
            else:
                a = value
        elif code == 0x61:
            x = memory[k]
        elif code == 0x02:
            memory[k] = a
        elif kind == 0x05:  # jumps
            op = code & 0xF0
            if op == 0x00:
                pc += k
            else:
                taken = a == k if op == 0x10 else bool(a & k) if op == 0x40 else None
                assert taken is not None, hex(code)
                pc += jt if taken else jf
        elif kind == 0x04:  # ALU
            operand = x if code & 0x08 else k
            op = code & 0xF0
            a = {0x00: a + operand, 0x50: a & operand, 0x70: a >> operand, 0xA0: a ^ operand}[op] & 0xFFFFFFFF
        elif code == 0x07:
            x = a
        elif kind == 0x06:
            return a if code & 0x10 else k
        else:
            raise AssertionError(f"opcode {code:#x} not interpreted")


ETHER = b"\x02" * 12


def ipv4(protocol: int, payload: bytes, options: bytes = b"", fragment: int = 0) -> bytes:
    header_len = 20 + len(options)
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | header_len // 4, 0, header_len + len(payload), 1, fragment, 64,
                         protocol, 0, socket.inet_aton("10.244.6.2"), socket.inet_aton("10.244.6.1"))
    return ETHER + b"\x08\x00" + header + options + payload


def ipv6(next_header: int, payload: bytes) -> bytes:
    header = struct.pack("!IHBB16s16s", 0x60000000, len(payload), next_header, 64,
                         socket.inet_pton(socket.AF_INET6, "fd00::2"), socket.inet_pton(socket.AF_INET6, "fd00::1"))
    return ETHER + b"\x86\xdd" + header + payload


def ports(source: int, destination: int) -> bytes:
    return struct.pack("!HH", source, destination) + b"\0" * 16


@pytest.mark.parametrize("source, destination", [(40000, 5201), (40001, 5201), (5201, 40001), (53, 53),
                                                 (65535, 1), (0, 0), (12345, 8080)])
@pytest.mark.parametrize("build", [
    lambda p: ipv4(socket.IPPROTO_TCP, p), lambda p: ipv4(socket.IPPROTO_UDP, p),
    lambda p: ipv4(socket.IPPROTO_TCP, p, options=b"\x01" * 12),  # a 32-byte header: ports further on
    lambda p: ipv6(socket.IPPROTO_TCP, p), lambda p: ipv6(socket.IPPROTO_UDP, p)])
def test_tcp_and_udp_go_to_their_flow_queue(build, source, destination):
    queue = run(flows.FLOW_HASH, build(ports(source, destination)))
    assert queue == flows.flow_queue(source, destination) == flows.flow_queue(destination, source)
    assert queue in flows.FLOW_CLASSES


def test_every_queue_is_used():
    assert {flows.flow_queue(port, 443) for port in range(32768, 32768 + 64)} == set(flows.FLOW_CLASSES)


@pytest.mark.parametrize("packet", [
    ETHER + b"\x08\x06" + b"\0" * 28,  # ARP
    ipv4(socket.IPPROTO_ICMP, b"\x08\0" + b"\0" * 30),
    ipv4(socket.IPPROTO_UDP, ports(40000, 53), fragment=0x2000),  # first fragment: MF set, offset 0
    ipv4(socket.IPPROTO_UDP, b"\0" * 24, fragment=185),  # a later fragment: no ports in it
    ipv6(58, b"\x80\0" + b"\0" * 30),  # ICMPv6
    ipv4(socket.IPPROTO_TCP, b"")[:30],  # cut short
])
def test_anything_else_goes_to_the_default_class(packet):
    assert run(flows.FLOW_HASH, packet) == 0
