"""Tiny traffic probes run inside network namespaces (the demo and the test-suite use them).

`SERVER` answers each TCP connection or UDP datagram with the address it came from; `CLIENT`
prints what the server saw. Both are bounded in time.
"""

from __future__ import annotations

SERVER = r"""
import socket, sys, time
proto, port, deadline = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET6, kind)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", port))
if proto == "tcp":
    s.listen(16)
print("ready", flush=True)
while time.time() < deadline:
    s.settimeout(max(0.1, deadline - time.time()))
    try:
        if proto == "tcp":
            c, peer = s.accept()
            c.recv(100)
            c.sendall(peer[0].removeprefix("::ffff:").encode())
            c.close()
        else:
            data, peer = s.recvfrom(100)
            s.sendto(peer[0].removeprefix("::ffff:").encode(), peer)
    except OSError:
        pass
"""

CLIENT = r"""
import socket, sys
proto, host, port, sport = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if sport:
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", sport))
s.settimeout(3)
if proto == "tcp":
    s.connect((host, port)); s.sendall(b"hi"); print(s.recv(100).decode())
else:
    s.sendto(b"hi", (host, port)); print(s.recvfrom(100)[0].decode())
"""
