"""macspoofchk on nftables: frames entering the bridge from a pod's port must carry the pod's MAC.

One table `bridge pycni_spoofchk`; each pod adds its host port to `ports` and
`port . mac` to `allowed`, tagged with its attachment.
"""

from __future__ import annotations

from pycni.host import nft

TABLE = nft.OwnedTable(
    "bridge",
    "pycni_spoofchk",
    """
    comment "pycni bridge macspoofchk (layout v1)"
    set ports { type ifname; }
    set allowed { type ifname . ether_addr; }
    chain prerouting {
        type filter hook prerouting priority -300; policy accept;
        iifname @ports iifname . ether saddr != @allowed drop
    }
    """,
    ("ports", "allowed"),
    probe_chain="prerouting",
)


def add(host_port: str, mac: str, tag: str) -> None:
    TABLE.add([("ports", host_port), ("allowed", {"concat": [host_port, mac.lower()]})], tag)


def present(tag: str) -> bool:
    return len(TABLE.members(tag)) == 2
