"""Records that keep per instance only what varies and share the rest (issue 15: daemon memory).

A million peers read from one sip.conf differ in their name, address, secret...; their thirty-odd
other options (transport, qualify timing, probe shape, verdict policy...) are nearly always the
values of a few templates, and a slots dataclass stored all of them in every peer (≈ 400 B).
`shared_profile(own=...)` turns a dataclass into a class with the same fields, constructor,
equality, repr, `dataclasses.fields`/`replace`/`asdict`, copying and pickling, whose instances
keep in slots only the `own` fields plus one reference to an immutable `Profile`: the values of
all the other fields, one object for every instance with equal values (interned). Each profile
has a subclass of the record class holding its values as class attributes, and its records are
of that class (`__class__` is assigned): reading a shared field is a plain attribute lookup, a
little dearer than a slot, with no function call (a property costs ≈ 5 % of the engine's
instructions per transaction: 17 reads). Setting one (`__setattr__`) moves the record to the
profile with that value (a cached transition: setting the value it already has changes
nothing). Past MAX_CLASSES profiles of a record class (values that are really per record), new
profiles have no class of their own: their records read through the record class's properties.

`located` names one more field holding "file:line" (where the record was read): its file is
part of the profile and only its line is the instance's, and reading it gives the same string
back; a value not of that form is kept whole in the profile. The line is not an int object of
its own (28 B each past 256, one per record: lines are all different) but an entry of a shared
`array('i')` of LINES_PER_CHUNK lines, filled as records are made (`_LineChunks`): the record
keeps the chunk and its index there (below 256, so a cached small int), ≈ 4 B per record (a line
that is itself a cached small int, or -1, is kept as it is).

mypy sees the dataclass as written: the decorator changes how the values are stored, never which
values there are or their types. A profile's strings are copies of its own, made when it is
first interned, so a profile never keeps a config reader's temporaries (and their pymalloc
arenas) alive, as `config/sipconf.py _keep` does for the instances' own values.
"""

from __future__ import annotations

import dataclasses
import threading
from array import array
from collections.abc import Callable
from typing import Any, TypeVar

_R = TypeVar("_R")

#: at most this many distinct profiles are interned per record class; beyond it (values that are
#: all different: a field that is really per instance) each new one is an instance's own
MAX_INTERNED = 100_000
_MAX_NEXT = 64  # transitions cached per profile (setting field i to a value -> the next profile)


def fresh(v: Any) -> Any:
    """A new object equal to a str (or a tuple's strs), so that it lives where it is made."""
    if type(v) is str:
        return v.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    if type(v) is tuple:
        return tuple(fresh(x) for x in v)
    return v


class Profile:
    """The shared values of a record class's non-own fields, by position (`values`). Immutable:
    setting a field of a record gives it another profile (`with_value`). `cls`: the class its
    records have, a subclass of the record class holding these values as class attributes (so
    that reading one costs what reading a slot does), or the record class itself past
    MAX_CLASSES (its properties then read `values`)."""

    __slots__ = ("values", "cls", "_next", "_record")

    values: tuple[Any, ...]
    cls: type
    _next: dict[tuple[int, type, Any], Profile]
    _record: type

    def with_value(self, i: int, value: Any) -> Profile:
        """This profile with field `i` set to `value` (itself when it already has that value)."""
        key = (i, type(value), value)
        try:
            got = self._next.get(key)
        except TypeError:  # an unhashable value: this instance's own profile
            return _make(self._record, self.values[:i] + (value,) + self.values[i + 1:], None)
        if got is None:
            cur = self.values[i]
            if type(cur) is type(value) and cur == value:
                got = self
            else:
                got = intern_profile(self._record, self.values[:i] + (value,) + self.values[i + 1:])
            if len(self._next) < _MAX_NEXT:
                self._next[key] = got
        return got

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Profile) and (self is other or self.values == other.values)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Callable[..., Profile], tuple[type, tuple[Any, ...]]]:
        return intern_profile, (self._record, self.values)

    def __repr__(self) -> str:
        return f"Profile{self.values!r}"


_Key = tuple[tuple[Any, ...], tuple[type, ...]]
_INTERNED: dict[type, dict[_Key, Profile]] = {}
MAX_CLASSES = 1024  # profiles per record class with a class of their own (≈ 3 KB each)


def _make(record: type, values: tuple[Any, ...], key: _Key | None) -> Profile:
    p = Profile()
    p.values = values
    p._next = {}
    p._record = record
    p.cls = record
    if key is not None:
        table = _INTERNED.setdefault(record, {})
        table[key] = p
        if len(table) <= MAX_CLASSES:
            attrs = {n: v for n, v in zip(record.__shared__, values, strict=True)  # type: ignore[attr-defined]
                     if n != record.__located__}  # type: ignore[attr-defined]
            p.cls = type(record.__name__, (record,), {"__slots__": (), "__module__": record.__module__,
                                                     "__qualname__": record.__qualname__, **attrs})
    return p


def intern_profile(record: type, values: tuple[Any, ...]) -> Profile:
    """The one profile of `record` with these values (1 and True differ: the types are part of
    the key); a new one, holding copies of the strings, the first time."""
    table = _INTERNED.setdefault(record, {})
    try:
        got = table.get((values, tuple(map(type, values))))
    except TypeError:  # an unhashable value: not shared
        return _make(record, values, None)
    if got is not None:
        return got
    values = fresh(values)
    return _make(record, values, (values, tuple(map(type, values))) if len(table) < MAX_INTERNED else None)


def interned_count(record: type) -> int:
    return len(_INTERNED.get(record, ()))


LINES_PER_CHUNK = 256  # lines per shared array: an index into one is a cached small int (< 256)
_LINE_MIN, _LINE_MAX = -(2**31), 2**31 - 1  # what an array('i') holds; other ints are kept whole


class _LineChunks:
    """Where records' lines are kept: append-only `array('i')` chunks shared by the records made
    one after another. A record holds (chunk, index); a chunk lives as long as one of its records
    does (an entry is never rewritten: setting a record's line takes a new entry)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # records may be made in several threads (config readers)
        self._chunk: array[int] = array("i")

    def put(self, line: int) -> tuple[array[int], int] | tuple[int, None]:
        if -5 <= line <= 256 or not (_LINE_MIN <= line <= _LINE_MAX):
            return line, None  # a cached small int (-1: no line) costs nothing; out of an int32: kept whole
        with self._lock:
            chunk = self._chunk
            if len(chunk) >= LINES_PER_CHUNK:
                chunk = self._chunk = array("i")
            chunk.append(line)
            return chunk, len(chunk) - 1


_LINES = _LineChunks()


def _get_line(self: Any) -> int:
    i = self._li
    return self._lines if i is None else self._lines[i]  # type: ignore[no-any-return]


def _set_line(self: Any, line: int) -> None:
    chunk, i = _LINES.put(line)
    object.__setattr__(self, "_lines", chunk)
    object.__setattr__(self, "_li", i)


def split_location(where: str) -> tuple[str, int]:
    """"file:line" -> (file, line); anything else -> (whole, -1). Exact: joined back it is `where`."""
    head, sep, tail = where.rpartition(":")
    if sep and tail.isascii() and tail.isdigit() and (tail == "0" or tail[0] != "0"):
        return head, int(tail)
    return where, -1


def join_location(file: str, line: int) -> str:
    return file if line < 0 else f"{file}:{line}"


def _rebuild(record: type, own: tuple[Any, ...], line: int, profile: Profile) -> Any:
    obj: Any = object.__new__(record)
    for name, v in zip(record.__own__, own, strict=True):  # type: ignore[attr-defined]
        object.__setattr__(obj, name, v)
    object.__setattr__(obj, "_line", line)
    object.__setattr__(obj, "_p", profile)
    object.__setattr__(obj, "__class__", profile.cls)
    return obj


def shared_profile(*, own: tuple[str, ...], located: str | None = None) -> Callable[[type[_R]], type[_R]]:
    """Class decorator (on a `@dataclass`): see the module docstring."""

    def make(cls: type[_R]) -> type[_R]:
        return _build(cls, own, located)

    return make


def _build(cls: type[_R], own: tuple[str, ...], located: str | None) -> type[_R]:
    flds = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = [f.name for f in flds]
    missing = [n for n in (*own, *([located] if located else [])) if n not in names]
    if missing or (located in own):
        raise TypeError(f"shared_profile: {missing or located} not a field, or both own and located")
    shared = [n for n in names if n not in own]
    env: dict[str, Any] = {"_intern": intern_profile, "_split": split_location, "_join": join_location}
    params = []
    for i, f in enumerate(flds):
        if f.default_factory is not dataclasses.MISSING or not f.init:
            raise TypeError(f"shared_profile: field {f.name} has a default_factory or is not in __init__")
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            env[f"_D{i}"] = f.default
            params.append(f"{f.name}=_D{i}")
    body = [f"    _set(self, {n!r}, {n})" for n in own]
    if located:
        body.append(f"    {located}, line = _split({located})")
        body.append("    _set(self, '_line', line)")
    else:
        body.append("    _set(self, '_line', -1)")
    body.append(f"    p = _intern(_cls, ({''.join(n + ', ' for n in shared)}))")
    body += ["    _set(self, '_p', p)", "    _set(self, '__class__', p.cls)"]
    lines = [f"def __init__(self, {', '.join(params)}):", *body]
    own_t = "".join(f"self.{n}, " for n in own)
    other_t = "".join(f"other.{n}, " for n in own)
    lines += [
        "def __eq__(self, other):",
        "    if not isinstance(other, _cls):",
        "        return NotImplemented",
        f"    return ({own_t}self._line) == ({other_t}other._line) and self._p == other._p",
        "def __reduce__(self):",
        f"    return _rebuild, (_cls, ({own_t}), self._line, self._p)",
    ]
    for i, n in enumerate(shared):  # read when a profile has no class of its own (MAX_CLASSES)
        get = f"_join(self._p.values[{i}], self._line)" if n == located else f"self._p.values[{i}]"
        lines += [f"def _get_{n}(self):", f"    return {get}"]
    env["_rebuild"] = _rebuild
    env["_set"] = object.__setattr__
    exec("\n".join(lines), env)  # noqa: S102 - generated from the dataclass's own field names, as dataclasses does
    index = {n: i for i, n in enumerate(shared)}

    def __setattr__(self: Any, name: str, value: Any) -> None:
        i = index.get(name)
        if i is None:  # an own field (or none: AttributeError, as with slots)
            object.__setattr__(self, name, value)
            return
        if name == located:
            value, line = split_location(value)
            object.__setattr__(self, "_line", line)
        p = self._p.with_value(i, value)
        object.__setattr__(self, "_p", p)
        object.__setattr__(self, "__class__", p.cls)

    def __repr__(self: Any) -> str:
        return f"{cls.__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"

    ns: dict[str, Any] = {
        "__slots__": (*own, "_lines", "_li", "_p"),  # _lines[_li]: the line (_LineChunks)
        "_line": property(_get_line, _set_line, doc="the line of `located` (-1: none)"),
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "__dataclass_fields__": cls.__dataclass_fields__,  # type: ignore[attr-defined]
        "__dataclass_params__": cls.__dataclass_params__,  # type: ignore[attr-defined]
        "__match_args__": getattr(cls, "__match_args__", ()),
        "__own__": own,
        "__shared__": tuple(shared),
        "__located__": located,
        "__init__": env["__init__"],
        "__setattr__": __setattr__,
        "__eq__": env["__eq__"],
        "__hash__": None,
        "__reduce__": env["__reduce__"],
        "__repr__": __repr__,
    }
    for n in shared:
        ns[n] = property(env[f"_get_{n}"], doc=f"{n} (shared: profile.py)")
    new = type(cls.__name__, (), ns)
    env["_cls"] = new
    return new
