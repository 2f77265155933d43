"""Files replaced whole: written beside their target, then renamed over it, so a reader (the runtime
reading a CDI spec, Multus a device-info file, `pycni status` the device plugin's state) sees the old
content or the new, never half of it."""

from __future__ import annotations

import os


def replace_file(path: str, content: bytes, mode: int | None = None, durable: bool = False) -> None:
    """Make `path` hold `content`, creating its directory; `mode` sets the permissions, `durable` fsyncs
    before the rename (a file that must survive a crash of the node). Raises OSError."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            f.write(content)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
