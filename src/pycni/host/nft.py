"""nftables through libnftables' JSON API: the only module that loads it.

pycni owns its own tables and never touches another. Per-pod state lives as
set elements whose comment is the pod's attachment tag, so adding or removing
one pod is a single atomic transaction that never rewrites a chain.
"""

from __future__ import annotations

import json  # loaded already: every plugin call's config is JSON
import threading

from pycni.host import netns
from pycni.protocol.errors import CNIError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (10 ms of a plugin start)
if TYPE_CHECKING:
    from collections.abc import Callable


class NftError(CNIError):
    pass


DEBIAN_BINDING = "/usr/lib/python3/dist-packages/nftables"


def _binding():
    """libnftables' official Python binding: importable, or where Debian's python3-nftables puts it."""
    try:
        import nftables
    except ImportError:
        import importlib.util
        import os
        import sys

        init = os.path.join(DEBIAN_BINDING, "__init__.py")
        if not os.path.exists(init):
            raise NftError("the nftables Python binding is missing (Debian package python3-nftables)") from None
        spec = importlib.util.spec_from_file_location("nftables", init, submodule_search_locations=[DEBIAN_BINDING])
        if spec is None or spec.loader is None:
            raise NftError(f"cannot load the nftables Python binding from {DEBIAN_BINDING}") from None
        nftables = importlib.util.module_from_spec(spec)
        sys.modules["nftables"] = nftables
        spec.loader.exec_module(nftables)
    return nftables


def load_library() -> None:
    """Load the binding and libnftables itself now: a later context (in a thread that entered a caller's root,
    where the library may not exist) finds it loaded, by its soname."""
    _binding().Nftables()


_contexts = threading.local()


def _context_for_this_namespace(json_output: bool):
    """A libnftables context of this thread's network namespace (its netlink socket is bound to the
    namespace it was opened in; the daemon serves many namespaces from many threads)."""
    key = (netns.own_namespace_id(), json_output)
    cache = getattr(_contexts, "by_namespace", None)
    if cache is None:
        cache = _contexts.by_namespace = {}
    if key not in cache:
        context = _binding().Nftables()
        if json_output:
            context.set_json_output(True)
            context.set_handle_output(False)
        cache[key] = context
    return cache[key]


def _nft():
    return _context_for_this_namespace(json_output=True)


def run(commands: list[dict]) -> dict:
    """Execute commands as one transaction; all or nothing. A refusal names the command refused."""
    if not commands:
        return {}
    rc, output, error = _nft().json_cmd({"nftables": commands})
    if rc != 0:
        culprit = _first_refused(commands) if len(commands) > 1 else commands[0]
        raise refusal(str(error), describe(culprit) if culprit else f"a transaction of {len(commands)} commands")
    return output or {}


def try_run(commands: list[dict]) -> bool:
    """Execute commands as one transaction; whether the kernel took it. A refusal is an answer here (the
    table not made yet, a key taken), so nothing is spent on naming it."""
    return not commands or _nft().json_cmd({"nftables": commands})[0] == 0


# What the kernel says when it refuses a transaction, and the CNI code each deserves: a key that collides
# with an element already there is the request's (7, invalid network config: say which); a busy or
# interrupted kernel is transient (11, try again later); anything else is unexpected (999).
_TRANSIENT_REASONS = ("Device or resource busy", "Interrupted system call", "No buffer space available",
                      "Resource temporarily unavailable")


def refusal(error: str, refused: str) -> NftError:
    """An NftError naming what was `refused` and the kernel's reason, from libnftables' error text."""
    reason = next((line.split("Error: ", 1)[1] for line in error.splitlines() if "Error: " in line), error.strip())
    reason = reason.rsplit(": ", 1)[-1] if reason.startswith("Could not process rule") else reason
    code = 7 if reason == "File exists" else 11 if reason in _TRANSIENT_REASONS else 999
    return NftError(f"nftables refused {refused}: {reason}", error.strip(), code=code)


def _first_refused(commands: list[dict]) -> dict | None:
    """The first command of a refused transaction that the kernel refuses: the shortest refused prefix, found
    by bisection in dry runs (the kernel checks each and commits none); None when a dry run of them all is
    accepted now (a transient refusal). Only run after a failure."""
    context = _binding().Nftables()
    context.set_dry_run(True)
    if context.json_cmd({"nftables": commands})[0] == 0:
        return None
    good, bad = 0, len(commands)  # commands[:good] are accepted, commands[:bad] refused
    while bad - good > 1:
        middle = (good + bad) // 2
        if context.json_cmd({"nftables": commands[:middle]})[0] == 0:
            good = middle
        else:
            bad = middle
    return commands[bad - 1]


def describe(command: dict) -> str:
    """A JSON command in nft syntax, for messages: `add element inet t s { 10.0.0.2 . 10.0.0.0/16 }`."""
    try:
        (verb, body), = command.items()
        (kind, spec), = body.items()
        where = " ".join(str(spec[key]) for key in ("family", "table", "name") if key in spec)
        if kind == "element":
            return f"{verb} element {where} {{ {', '.join(_value(e) for e in spec.get('elem', []))} }}"
        return f"{verb} {kind} {where}"
    except (AttributeError, ValueError, TypeError, KeyError):
        return json.dumps(command)


def _value(value) -> str:
    """A JSON expression (address, prefix, range, concatenation, map element) in nft syntax."""
    if isinstance(value, list):  # a map element: [key, value]
        return " : ".join(_value(v) for v in value)
    if not isinstance(value, dict):
        return str(value)
    if "elem" in value:
        return _value(value["elem"].get("val"))
    if "concat" in value:
        return " . ".join(_value(v) for v in value["concat"])
    if "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    if "range" in value:
        return "-".join(_value(v) for v in value["range"])
    return json.dumps(value)


def set_elements(family: str, table: str, set_name: str) -> list[tuple[object, str]]:
    """(key, comment) of every element of a set or map; [] when the set or table does not exist."""
    return [(key, comment) for key, _, comment in map_entries(family, table, set_name)]


def map_entries(family: str, table: str, name: str) -> list[tuple[object, object, str]]:
    """(key, value, comment) of every element of a map or set (value None in a set), as libnftables' JSON
    gives them; [] when it or its table does not exist. Read only: also how `status` reads a table that is
    not pycni's (a runtime's own hostPorts)."""
    for kind in ("set", "map"):
        rc, output, _ = _read(_nft(), {"nftables": [{"list": {kind: {"family": family, "table": table,
                                                                       "name": name}}}]})
        if rc == 0 and output:
            break
    else:
        return []
    found: list[tuple[object, object, str]] = []
    for item in output.get("nftables", []):
        for element in (item.get("set") or item.get("map") or {}).get("elem", []):
            value = None
            if isinstance(element, list):  # a map element: [key, value]
                element, value = element
            if isinstance(element, dict) and "elem" in element:
                found.append((element["elem"].get("val"), value, element["elem"].get("comment", "")))
            else:
                found.append((element, value, ""))
    return found


def _read(context, command, attempts: int = 20):
    """A read (list/get). The kernel interrupts a dump when the set changes meanwhile, which happens
    under parallel ADD/DEL of other pods: then read again. "No such file" is a real answer."""
    import time

    for attempt in range(attempts):
        rc, output, error = context.json_cmd(command) if isinstance(command, dict) else context.cmd(command)
        if rc == 0 or "No such file or directory" in str(error) or attempt == attempts - 1:
            return rc, output, error
        time.sleep(0.001 * (attempt + 1))
    return rc, output, error


def chain_exists(family: str, table: str, chain: str) -> bool:
    """Cheap existence probe for a table's layout (a chain with no per-pod state)."""
    return _read(_nft(), {"nftables": [{"list": {"chain": {"family": family, "table": table, "name": chain}}}]})[0] == 0


def chain_listing(family: str, table: str, chain: str) -> tuple[dict, list[dict]] | None:
    """A chain (its JSON: type, hook, policy) and its rules, or None when there is no such chain. Read only:
    how the agent sees another table's FORWARD policy."""
    rc, output, _ = _read(_nft(), {"nftables": [{"list": {"chain": {"family": family, "table": table,
                                                                      "name": chain}}}]})
    if rc != 0:
        return None
    items = (output or {}).get("nftables", [])
    chains = [item["chain"] for item in items if "chain" in item]
    return (chains[0], [item["rule"] for item in items if "rule" in item]) if chains else None


def element(family: str, table: str, set_name: str, key, comment: str) -> dict:
    return {"element": {"family": family, "table": table, "name": set_name,
                        "elem": [{"elem": {"val": key, "comment": comment}}]}}


def delete_element(family: str, table: str, set_name: str, key) -> dict:
    return {"delete": {"element": {"family": family, "table": table, "name": set_name, "elem": [key]}}}


def remove_tagged(family: str, table: str, set_names: tuple[str, ...], keep) -> int:
    """Delete, in one transaction, every element of `set_names` whose comment `keep(comment)` rejects."""
    commands = [
        delete_element(family, table, name, key)
        for name in set_names
        for key, comment in set_elements(family, table, name)
        if not keep(comment)
    ]
    run(commands)
    return len(commands)


def remove_attachment(family: str, table: str, set_names: tuple[str, ...], tag: str) -> int:
    """Delete every element tagged `tag` (found by listing the sets)."""
    return remove_tagged(family, table, set_names, lambda comment: comment != tag)


def remove_stale(family: str, table: str, set_names: tuple[str, ...], stale: Callable[[str], bool]) -> int:
    """GC: delete the elements whose comment `stale(comment)` accepts."""
    return remove_tagged(family, table, set_names, lambda comment: not stale(comment))


def run_script(script: str) -> None:
    """Execute nft syntax as one transaction."""
    rc, _, error = _nft().cmd(script)
    if rc != 0:
        raise refusal(str(error), _refused_line(str(error)) or "a transaction")


def _refused_line(error: str) -> str:
    """The command libnftables quotes under its first `Error:` line (text input), stripped."""
    lines = error.splitlines()
    for number, line in enumerate(lines[:-1]):
        if "Error: " in line and lines[number + 1].strip():
            return " ".join(lines[number + 1].split())
    return ""


def create_guarded(script: str, exists) -> None:
    """Run a script that starts with `create ...` unless `exists()`; losing the race to a concurrent
    creator (whose `create` made ours fail) is fine."""
    if exists():
        return
    try:
        run_script(script)
    except NftError:
        if not exists():
            raise


class OwnedTable:
    """A table pycni owns whose chains are static and whose per-pod state is tagged set elements.

    `definition` is the nft body of the table (sets and chains). The table is created whole, in
    one transaction, the first time it is needed; concurrent creators race safely because
    `create table` fails for all but one of them.
    """

    def __init__(self, family: str, name: str, definition: str, set_names: tuple[str, ...],
                 probe_chain: str) -> None:
        self.family = family
        self.name = name
        self.definition = definition
        self.set_names = set_names
        self.probe_chain = probe_chain  # listing it costs the same with 1 or 10,000 pods

    def exists(self) -> bool:
        return chain_exists(self.family, self.name, self.probe_chain)

    def ensure(self) -> None:
        create_guarded(f"create table {self.family} {self.name}\n"
                       f"table {self.family} {self.name} {{\n{self.definition}\n}}\n", self.exists)

    def add(self, members: list[tuple[str, object]], tag: str) -> None:
        """Add (set name, key) elements tagged `tag`, atomically; the table is made on first use."""
        commands = [{"add": element(self.family, self.name, set_name, key, tag)} for set_name, key in members]
        if not try_run(commands):
            self.ensure()
            run(commands)

    def members(self, tag: str) -> list[tuple[str, object]]:
        return [(name, key) for name in self.set_names
                for key, comment in set_elements(self.family, self.name, name) if comment == tag]

    def comment_of(self, set_name: str, key_text: str) -> str | None:
        """The tag of the element `key_text` (nft syntax) of `set_name`, None when there is none."""
        return element_comment(self.family, self.name, set_name, key_text)

    def remove(self, tag: str, known: list[tuple[str, str]] | None = None) -> int:
        """Delete the elements tagged `tag`; nothing to do (and no error) when they or the table are gone.

        `known` lists (set name, key in nft syntax) where they should be: then each is looked up by key
        (O(1)) instead of listing whole sets."""
        if known is not None:
            mine = [(name, key) for (name, key), comment in zip(
                known, element_comments(self.family, self.name, known, exact=True), strict=True) if comment == tag]
            if mine:
                run_script("\n".join(f"delete element {self.family} {self.name} {name} {{ {key} }}"
                                      for name, key in mine))
            return len(mine)
        if not self.exists():
            return 0
        return remove_attachment(self.family, self.name, self.set_names, tag)

    def gc(self, stale: Callable[[str], bool]) -> int:
        """Delete the elements whose tag `stale(tag)` accepts."""
        if not self.exists():
            return 0
        return remove_stale(self.family, self.name, self.set_names, stale)


def element_texts(family: str, table: str, lookups: list[tuple[str, str]]) -> list[str | None]:
    """Elements in nft syntax (`key comment "tag" : value`), each (set name, key in nft syntax) looked up by
    key; None for one that is absent.

    libnftables 1.0.x has no JSON form of `get element`, so this goes through the text API. Each lookup
    first fills libnftables' cache with whole sets (~3 ms with 500 pods on the node); the lookups go in one
    run, one `get element` each, answered in order, which saves the runs' overhead but not those fills
    (measured: a DEL's lookups from ~15 to ~13 ms). Only when one is absent (the run then fails whole) are
    they asked one by one."""
    if not lookups:
        return []
    commands = [f"get element {family} {table} {set_name} {{ {key_text} }}" for set_name, key_text in lookups]
    rc, output, _ = _read(_nft_text(), "; ".join(commands))
    if rc == 0:
        found: list[str | None] = list(_elements_of(output))
        if len(found) == len(lookups):
            return found
    if len(lookups) == 1:
        return [None]
    return [element_texts(family, table, [lookup])[0] for lookup in lookups]


def _elements_of(output: str) -> list[str]:
    """The `elements = { ... }` of each set or map in the text answer, in order."""
    found = []
    start = output.find("elements = {")
    while start >= 0:
        start += len("elements = {")
        end = output.find("}", start)
        found.append(output[start:end].strip())
        start = output.find("elements = {", end)
    return found


COMMENT_OPENING = 'comment "'


def element_comments(family: str, table: str, lookups: list[tuple[str, str]], exact: bool = False) -> list[str | None]:
    """The comment (attachment tag) of each element looked up, in one libnftables run; None for one that is
    absent.

    In an interval set the kernel answers a lookup with the element that contains the key; `exact` takes
    only an element whose key is the key looked up itself (what a delete of that key would remove)."""
    comments: list[str | None] = []
    for (_, key_text), output in zip(lookups, element_texts(family, table, lookups), strict=True):
        if output is None or (exact and _element_key(output) != " ".join(key_text.split())):
            comments.append(None)
            continue
        start = output.find(COMMENT_OPENING)
        start += len(COMMENT_OPENING)
        comments.append("" if start < len(COMMENT_OPENING) else output[start:output.find('"', start)])
    return comments


def element_comment(family: str, table: str, set_name: str, key_text: str, exact: bool = False) -> str | None:
    """The comment (attachment tag) of one element; None when the element is absent (see element_comments)."""
    return element_comments(family, table, [(set_name, key_text)], exact)[0]


def _element_key(text: str) -> str:
    """The key of an element in nft syntax (`key comment "tag" : value`), whitespace normalised."""
    for separator in (' comment "', " : "):
        if separator in text:
            text = text[:text.index(separator)]
    return " ".join(text.split())


def _nft_text():
    return _context_for_this_namespace(json_output=False)


def release_contexts() -> None:
    """Close this thread's libnftables contexts (the daemon does so after each request, so no netlink
    socket keeps a namespace alive). Not kept for the next call: each holds its cache of the tables, which at
    hundreds of pods costs more memory than making a context again costs time."""
    cache = getattr(_contexts, "by_namespace", None)
    if cache:
        cache.clear()
