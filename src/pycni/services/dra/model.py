"""What a DRA driver deals in, as frozen typed objects: the devices it publishes (with their attributes), the
claims the kubelet names, the devices the scheduler allocated to them, and what preparing them gave the
containers. No gRPC, no API client: a driver's logic is testable without either."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pycni.services.devices.model import Allocation

DEVICE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a DNS label
ATTRIBUTE_NAME = re.compile(r"([a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?/)?[A-Za-z_][A-Za-z0-9_]{0,31}")


@dataclass(frozen=True)
class Version:
    """A semantic-version attribute (`{"version": "1.2.3"}`), compared as a version by CEL's `semver()`."""

    value: str


AttributeValue = bool | int | str | Version
MAX_ATTRIBUTES = 32  # attributes and capacities of one device, together (the API's limit)
MAX_VALUE_LENGTH = 64  # of a string or version attribute
INT64 = 2**63


def attribute_problem(name: str, value: object) -> str:
    """Why the API would refuse this attribute ("" when it would not)."""
    if not ATTRIBUTE_NAME.fullmatch(name):
        return f"attribute name {name!r} is not a C identifier of at most 32 characters (with an optional domain/)"
    if not isinstance(value, bool | int | str | Version):
        return f"attribute {name} is a {type(value).__name__}, not a bool, int, str or Version"
    if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
        return f"attribute {name} is {value}, beyond a 64-bit integer"
    text = value.value if isinstance(value, Version) else value
    if isinstance(text, str) and len(text) > MAX_VALUE_LENGTH:
        return f"attribute {name} is {len(text)} characters long, more than {MAX_VALUE_LENGTH}"
    return ""


@dataclass(frozen=True, kw_only=True)
class PublishedDevice:
    """A device as the driver publishes it in its node's ResourceSlice pool, for the scheduler to allocate:
    its `name` (a DNS label, unique among the driver's devices on the node), `attributes` that CEL selectors
    read as `device.attributes["<driver>"].<name>` (a name with a domain of its own, `example.com/model`, is
    read under that domain), and `capacity` (quantities, `{"memory": "8Gi"}`)."""

    name: str
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    capacity: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not DEVICE_NAME.fullmatch(self.name):
            raise ValueError(f"device name {self.name!r} is not a DNS label (lower-case letters, digits, '-')")
        for key, value in self.attributes.items():
            problem = attribute_problem(key, value)
            if problem:
                raise ValueError(f"device {self.name}: {problem}")
        if len(self.attributes) + len(self.capacity) > MAX_ATTRIBUTES:
            raise ValueError(f"device {self.name}: more than {MAX_ATTRIBUTES} attributes and capacities together")
        object.__setattr__(self, "attributes", dict(self.attributes))
        object.__setattr__(self, "capacity", dict(self.capacity))


@dataclass(frozen=True, kw_only=True)
class ClaimRef:
    """A ResourceClaim as the kubelet names it: the UID tells a claim from a later one of the same name."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, kw_only=True)
class AllocatedDevice:
    """One result of a claim's allocation for this driver (`status.allocation.devices.results[]`)."""

    request: str
    pool: str
    device: str


@dataclass(frozen=True, kw_only=True)
class PreparedDevice:
    """A device made ready for a claim: what its containers get (`edits`, written to the claim's CDI spec)
    and for which of the claim's requests."""

    pool: str
    device: str
    request_names: tuple[str, ...] = ()
    edits: Allocation = field(default_factory=Allocation)


class PrepareFailed(Exception):
    """A claim that cannot be prepared (or unprepared); its message is what the kubelet reports on the pod."""


class Driver(ABC):
    """A DRA driver's node logic. `prepare` and `unprepare` are called at most once at a time per claim, and
    never again for a claim whose preparation is checkpointed: they need not be idempotent themselves.

    A driver that publishes its devices itself answers `devices()` (None: it publishes none, someone else
    does) and, when they change, calls the `changed` it is given by `watch` (run once, in a thread of its own;
    it may block until `close()`): the node's pool is then published again as a new generation."""

    name: str  # the driver's name (a DNS subdomain, `example.com`): the ResourceSlices' and claims' `driver`

    def devices(self) -> Sequence[PublishedDevice] | None:
        """The devices this node offers now (all of them, each time), or None to publish no ResourceSlice."""
        return None

    def watch(self, changed: Callable[[], None]) -> None:  # noqa: B027 - optional: devices that never change
        """Call `changed()` whenever `devices()` would answer differently; return once `close()` is called."""

    def close(self) -> None:  # noqa: B027 - optional
        """The driver is stopping: make `watch` return."""

    @abstractmethod
    def prepare(self, claim: ClaimRef, devices: Sequence[AllocatedDevice]) -> Sequence[PreparedDevice]:
        """Make `devices` ready for `claim`'s pod; PrepareFailed when they cannot be."""

    @abstractmethod
    def unprepare(self, claim: ClaimRef, devices: Sequence[PreparedDevice]) -> None:
        """Undo `prepare` (the pod is gone); PrepareFailed when it cannot be undone now."""
