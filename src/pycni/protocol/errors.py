"""CNI error results: the spec's well-known codes as exception classes."""

from __future__ import annotations


class CNIError(Exception):
    """An error to report to the runtime as `{code, msg, details}`."""

    code = 999

    def __init__(self, msg: str, details: str = "", code: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self, cni_version: str) -> dict:
        out: dict = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


class IncompatibleVersion(CNIError):
    """The config's cniVersion (or the verb at that version) is not supported."""

    code = 1


class UnsupportedField(CNIError):
    """A config field whose value this plugin does not support."""

    code = 2


class InvalidEnvironment(CNIError):
    """A CNI_* variable is missing or unusable; the message names it."""

    code = 4


class IOFailure(CNIError):
    """Reading the plugin's input failed."""

    code = 5


class DecodeFailure(CNIError):
    """stdin is not JSON, or not a JSON object."""

    code = 6


class InvalidConfig(CNIError):
    """The network config is well-formed JSON but not a valid config."""

    code = 7


class TryAgainLater(CNIError):
    """Transient: a lock could not be taken in time, the runtime may retry."""

    code = 11


class NotAvailable(CNIError):
    """STATUS: the plugin cannot serve ADD now (e.g. address pool exhausted)."""

    code = 50


class InternalError(CNIError):
    """A plugin failed in a way it did not anticipate (reported as JSON, never a traceback)."""

    code = 999
