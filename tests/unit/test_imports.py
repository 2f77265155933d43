"""pycni.imports: a package's submodules imported without its __init__, and undone; the API connection's
line reader for watch streams."""

from __future__ import annotations

import sys

import pytest

from pycni.imports import forget, without_init
from pycni.services.apiserver import _lines, _refusal


@pytest.fixture
def heavy_package(tmp_path, monkeypatch):
    package = tmp_path / "heavypkg"
    (package / "inner").mkdir(parents=True)
    (package / "__init__.py").write_text("import sys\nsys.heavy_init_ran = True\nfrom . import everything\nHEAVY = 1\n")
    (package / "everything.py").write_text("")
    (package / "light.py").write_text("VALUE = 42\n")
    (package / "inner" / "__init__.py").write_text("raise ImportError('the inner __init__ ran')\n")
    (package / "inner" / "part.py").write_text("from heavypkg.light import VALUE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "heavypkg"
    forget(["heavypkg"])
    if hasattr(sys, "heavy_init_ran"):
        del sys.heavy_init_ran


def test_submodules_import_without_the_package_init(heavy_package):
    assert without_init("heavypkg", "heavypkg.inner") == ["heavypkg", "heavypkg.inner"]
    from heavypkg.inner.part import VALUE

    assert VALUE == 42
    assert not hasattr(sys, "heavy_init_ran") and "heavypkg.everything" not in sys.modules
    assert sys.modules["heavypkg"].inner is sys.modules["heavypkg.inner"]
    assert without_init("heavypkg") == []  # there already: nothing registered twice


def test_a_name_the_package_lacks_runs_its_init_then(heavy_package):
    """Code of someone else's in the process (a third-party driver importing the whole client) sees the
    package as if it had been imported whole; a submodule by name is still only that submodule."""
    without_init("heavypkg")
    from heavypkg import light  # (a submodule: pyroute2's own modules import each other so)

    assert light.VALUE == 42 and not hasattr(sys, "heavy_init_ran")
    import heavypkg

    assert heavypkg.HEAVY == 1 and sys.heavy_init_ran and "heavypkg.everything" in sys.modules
    with pytest.raises(AttributeError, match="no_such_name"):
        heavypkg.no_such_name  # noqa: B018 - the package's own answer once its __init__ ran


def test_forget_lets_the_package_import_whole(heavy_package):
    without_init("heavypkg")
    import heavypkg.light  # noqa: F401

    forget(["heavypkg"])
    assert not [m for m in sys.modules if m.startswith("heavypkg")]
    import heavypkg

    assert sys.heavy_init_ran and heavypkg.everything is sys.modules["heavypkg.everything"]


def test_a_missing_package_registers_nothing(heavy_package):
    with pytest.raises(ImportError, match="no_such_package"):
        without_init("heavypkg", "heavypkg.no_such_package")
    assert "heavypkg" not in sys.modules


class Chunked:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def stream(self, amt=None, decode_content=False):
        assert amt is None and decode_content is False  # a chunk as it arrives, not a fixed size
        yield from self.chunks


def test_watch_lines_across_chunks():
    chunks = [b'{"type": "ADDED"}\n{"ty', b'pe": "MOD', b'IFIED"}\n', b"\n", b'{"type": "\xc3\xa9"}']
    assert list(_lines(Chunked(chunks))) == ['{"type": "ADDED"}', '{"type": "MODIFIED"}', "", '{"type": "é"}']


def test_a_refusal_carries_the_status_message():
    error = _refusal(403, "Forbidden", b'{"kind": "Status", "message": "nodes is forbidden", "code": 403}')
    assert (error.status, error.reason, str(error)) == (403, "Forbidden", "HTTP 403 Forbidden: nodes is forbidden")
    assert str(_refusal(502, "Bad Gateway", b"<html>")) == "HTTP 502 Bad Gateway"
