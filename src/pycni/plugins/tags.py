"""Names and tags derived from (network, container, ifname), shared by every plugin that owns host state.

Everything pycni leaves on the node for a pod (a host veth, nftables set
elements, an ifb device) is named or tagged from these, so DEL and GC can find
exactly their own without any other record.
"""

from __future__ import annotations

try:  # CPython's own SHA-256: hashlib would load OpenSSL first (~3 ms of each plugin process's start)
    from _sha2 import sha256  # type: ignore[import-not-found]  # 3.12+
except ImportError:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found, no-redef, unused-ignore]  # 3.11
    except ImportError:
        from hashlib import sha256

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (10 ms of a plugin start)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from pycni.protocol.request import Request

MAX_COMMENT = 127  # nftables element comments hold 128 bytes with the terminating NUL


def _digest(*parts: str) -> str:
    return sha256("\0".join(parts).encode()).hexdigest()


def network_tag(network: str) -> str:
    return _digest(network)[:10]


def attachment_tag(network: str, container_id: str, ifname: str) -> str:
    """`<network hash> <containerID>/<ifname>`, readable when it fits in an nft comment, hashed otherwise."""
    readable = f"{network_tag(network)} {container_id}/{ifname}"
    if len(readable.encode()) <= MAX_COMMENT:
        return readable
    return f"{network_tag(network)} #{_digest(network, container_id, ifname)[:40]}"


def of_request(request: Request) -> str:
    """The attachment tag of a plugin request."""
    return attachment_tag(request.network_name, request.container_id, request.ifname)


def valid_tags(network: str, attachments: Iterable[tuple[str, str]] | None) -> set[str]:
    """Tags of the (containerID, ifname) attachments a GC request lists as valid."""
    return {attachment_tag(network, container_id, ifname) for container_id, ifname in attachments or ()}


def stale_rule(network: str, attachments: frozenset[tuple[str, str]] | None) -> Callable[[str], bool]:
    """For GC: a test that a tag is of `network` and its attachment is not among the valid `attachments`."""
    prefix = network_tag(network) + " "
    valid = valid_tags(network, attachments)
    return lambda tag: tag.startswith(prefix) and tag not in valid


def link_name(prefix: str, network: str, container_id: str, ifname: str) -> str:
    """A deterministic 15-character interface name such as `veth1a2b3c4d5e6`."""
    return prefix + _digest(network, container_id, ifname)[: 15 - len(prefix)]


def ifb_name(network: str, container_id: str, ifname: str) -> str:
    """`bw` + 5 hex of the network + 8 hex of the attachment: GC can tell one network's ifbs from another's."""
    return "bw" + network_tag(network)[:5] + _digest(network, container_id, ifname)[:8]


def ifb_prefix(network: str) -> str:
    return "bw" + network_tag(network)[:5]
