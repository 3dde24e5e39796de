"""Ready-made replicated objects: a dict, a counter, a FIFO queue and a set.

Each one is bounded (bytes, items, or a counter's 64-bit range) and refuses a write
that would cross its bound with :class:`~broadcast.replicated.errors.CapacityExceeded`,
as a whole and the same on every replica. Keys and set members are str, bytes or
int (not bool, not float: ``True == 1`` and ``1.0 == 1`` would merge keys); values
are any msgpack value. Values are kept encoded, so what a read returns is a fresh
copy that the caller may change freely, and the byte bound is exact: it is the
encoded size of keys and values.

Reads take ``linearizable=False`` (the default: a **local, possibly stale** read
of this replica's state, which may miss writes committed on other nodes) or
``linearizable=True`` (a read barrier through the log first: the read sees every
write committed before it began; it costs one commit). ``len(obj)`` and ``x in obj``
are local, stale reads.

Every replica must create its objects with the same bounds.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from broadcast.replicated.core import Replicated, replicated
from broadcast.replicated.encoding import pack, unpack
from broadcast.replicated.errors import BadArgument, CapacityExceeded, StateError

#: Keys of ReplDict and members of ReplSet.
Key = str | bytes | int

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_ITEMS = 100_000


def _key(key: Any) -> Key:
    """``key`` if it can be a key (checked in apply: the same answer everywhere)."""
    if type(key) is str or type(key) is bytes:
        return key
    if type(key) is int and INT64_MIN <= key <= INT64_MAX:
        return key
    raise BadArgument(f"a key is a str, bytes or 64-bit int, not {type(key).__name__}")


def _int64(value: Any, what: str) -> int:
    if type(value) is not int:
        raise BadArgument(f"{what} is an int, not {type(value).__name__}")
    return value


def _check_bounds(max_bytes: int, max_items: int) -> None:
    if max_bytes < 1 or max_items < 1:
        raise ValueError("max_bytes and max_items must be >= 1")


class ReplDict(Replicated):
    """A replicated dict, at most ``max_bytes`` of encoded keys and values and
    ``max_items`` entries. Iteration order is insertion order, the same everywhere."""

    state_version = 1

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_items: int = DEFAULT_MAX_ITEMS) -> None:
        _check_bounds(max_bytes, max_items)
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._data: dict[Key, tuple[bytes, bytes]] = {}  # key -> (packed key, packed value)
        self._bytes = 0

    # -------------------------------------------------------------- writes (in the log)

    @replicated
    def set(self, key: Key, value: Any) -> Any:
        """``d[key] = value``; returns the previous value (None if there was none)."""
        return self._set_many([(key, value)])[0]

    @replicated
    def setdefault(self, key: Key, value: Any = None) -> Any:
        """The value of ``key``; sets it to ``value`` first if it has none."""
        k = _key(key)
        if k not in self._data:
            self._set_many([(k, value)])
        return unpack(self._data[k][1])

    @replicated
    def update(self, items: dict[Any, Any]) -> None:
        """Set every key of ``items``, all or none (if the bounds would be crossed)."""
        if type(items) is not dict:
            raise BadArgument("update takes a dict")
        self._set_many(list(items.items()))

    @replicated
    def pop(self, key: Key, default: Any = None) -> Any:
        """Remove ``key``; returns its value, or ``default`` if it had none."""
        entry = self._data.pop(_key(key), None)
        if entry is None:
            return default
        self._bytes -= len(entry[0]) + len(entry[1])
        return unpack(entry[1])

    @replicated
    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        count = len(self._data)
        self._data = {}
        self._bytes = 0
        return count

    def _set_many(self, items: list[tuple[Any, Any]]) -> list[Any]:
        """Check every item and the bounds first, then change: all or nothing."""
        size, count = self._bytes, len(self._data)
        staged: dict[Key, tuple[bytes, bytes]] = {}
        for key, value in items:
            k = _key(key)
            try:
                entry = (pack(k), pack(value))
            except TypeError as exc:  # a decoded value always packs; kept for safety
                raise BadArgument(str(exc)) from None
            old = staged.get(k) or self._data.get(k)
            if old is None:
                count += 1
            else:
                size -= len(old[0]) + len(old[1])
            size += len(entry[0]) + len(entry[1])
            staged[k] = entry
        if size > self.max_bytes:
            raise CapacityExceeded(f"{self._repl_name or 'ReplDict'} bytes", size, self.max_bytes)
        if count > self.max_items:
            raise CapacityExceeded(f"{self._repl_name or 'ReplDict'} items", count, self.max_items)
        previous = [self._data.get(k) for k in staged]
        self._data.update(staged)
        self._bytes = size
        return [None if p is None else unpack(p[1]) for p in previous]

    # -------------------------------------------------------------- reads (local)

    def get(self, key: Key, default: Any = None, *, linearizable: bool = False) -> Any:
        """The value of ``key`` (a fresh copy), or ``default``. Local and possibly
        stale unless ``linearizable``."""
        with self._reading(linearizable):
            entry = self._data.get(key)  # a bad key type simply is not there
            return default if entry is None else unpack(entry[1])

    def contains(self, key: Key, *, linearizable: bool = False) -> bool:
        """Whether ``key`` is set. Local and possibly stale unless ``linearizable``."""
        with self._reading(linearizable):
            return key in self._data

    def keys(self, *, linearizable: bool = False) -> list[Key]:
        """The keys, in insertion order. Local and possibly stale unless ``linearizable``."""
        with self._reading(linearizable):
            return list(self._data)

    def items(self, *, linearizable: bool = False) -> list[tuple[Key, Any]]:
        """(key, value) pairs. Local and possibly stale unless ``linearizable``."""
        with self._reading(linearizable):
            return [(k, unpack(v)) for k, (_, v) in self._data.items()]

    def to_dict(self, *, linearizable: bool = False) -> dict[Key, Any]:
        """A copy as a plain dict. Local and possibly stale unless ``linearizable``."""
        return dict(self.items(linearizable=linearizable))

    def size_bytes(self) -> int:
        """Encoded bytes held (what ``max_bytes`` bounds). Local, possibly stale."""
        return self._bytes

    def __len__(self) -> int:
        """Entries held. Local, possibly stale."""
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        """Local, possibly stale."""
        return key in self._data

    # -------------------------------------------------------------- state

    def dump_state(self) -> Any:
        return [[k, v] for k, (_, v) in self._data.items()]

    def load_state(self, version: int, state: Any) -> None:
        if version != 1 or type(state) is not list:
            raise StateError(f"ReplDict cannot load state version {version}")
        data: dict[Key, tuple[bytes, bytes]] = {}
        size = 0
        for pair in state:
            if type(pair) is not list or len(pair) != 2 or type(pair[1]) is not bytes:
                raise StateError("ReplDict state entry is not [key, packed value]")
            try:
                k = _key(pair[0])
            except BadArgument as exc:
                raise StateError(str(exc)) from None
            entry = (pack(k), pair[1])
            data[k] = entry
            size += len(entry[0]) + len(entry[1])
        self._data = data
        self._bytes = size


class ReplCounter(Replicated):
    """A replicated 64-bit signed counter; a change beyond the range is refused."""

    state_version = 1

    def __init__(self, value: int = 0) -> None:
        if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("a counter starts at a 64-bit int")
        self._value = value

    @replicated
    def add(self, n: int) -> int:
        """Add ``n`` (may be negative); returns the new value."""
        value = self._value + _int64(n, "n")
        self._check_range(value)
        self._value = value
        return value

    @replicated
    def inc(self) -> int:
        """Add one; returns the new value."""
        return self.add(1)

    @replicated
    def set(self, value: int) -> int:
        """Set the value; returns the previous one."""
        self._check_range(_int64(value, "value"))
        previous = self._value
        self._value = value
        return previous

    def _check_range(self, value: int) -> None:
        if not INT64_MIN <= value <= INT64_MAX:
            limit = INT64_MAX if value > 0 else INT64_MIN
            raise CapacityExceeded(f"{self._repl_name or 'ReplCounter'} value", value, limit)

    def get(self, *, linearizable: bool = False) -> int:
        """The value. Local and possibly stale unless ``linearizable``."""
        with self._reading(linearizable):
            return self._value

    def dump_state(self) -> Any:
        return self._value

    def load_state(self, version: int, state: Any) -> None:
        if version != 1 or type(state) is not int:
            raise StateError(f"ReplCounter cannot load state version {version}")
        self._value = state


class ReplQueue(Replicated):
    """A replicated FIFO queue of msgpack values, at most ``max_items`` items and
    ``max_bytes`` encoded bytes; a ``put`` beyond either is refused."""

    state_version = 1

    def __init__(self, max_items: int = DEFAULT_MAX_ITEMS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        _check_bounds(max_bytes, max_items)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: deque[bytes] = deque()
        self._bytes = 0

    @replicated
    def put(self, item: Any) -> int:
        """Append ``item``; returns the queue's length after it."""
        packed = pack(item)
        name = self._repl_name or "ReplQueue"
        if len(self._items) + 1 > self.max_items:
            raise CapacityExceeded(f"{name} items", len(self._items) + 1, self.max_items)
        if self._bytes + len(packed) > self.max_bytes:
            raise CapacityExceeded(f"{name} bytes", self._bytes + len(packed), self.max_bytes)
        self._items.append(packed)
        self._bytes += len(packed)
        return len(self._items)

    @replicated
    def get(self, default: Any = None) -> Any:
        """Remove and return the oldest item, or ``default`` if the queue is empty.

        A replicated write (it removes the item), so two nodes never get one item."""
        if not self._items:
            return default
        packed = self._items.popleft()
        self._bytes -= len(packed)
        return unpack(packed)

    @replicated
    def clear(self) -> int:
        """Remove every item; returns how many there were."""
        count = len(self._items)
        self._items = deque()
        self._bytes = 0
        return count

    def peek(self, default: Any = None, *, linearizable: bool = False) -> Any:
        """The oldest item without removing it. Local and possibly stale unless
        ``linearizable`` (and another node may take it before you do)."""
        with self._reading(linearizable):
            return unpack(self._items[0]) if self._items else default

    def qsize(self, *, linearizable: bool = False) -> int:
        """Items queued. Local and possibly stale unless ``linearizable``."""
        with self._reading(linearizable):
            return len(self._items)

    def __len__(self) -> int:
        """Local, possibly stale."""
        return len(self._items)

    def dump_state(self) -> Any:
        return list(self._items)

    def load_state(self, version: int, state: Any) -> None:
        if version != 1 or type(state) is not list or not all(type(x) is bytes for x in state):
            raise StateError(f"ReplQueue cannot load state version {version}")
        self._items = deque(state)
        self._bytes = sum(map(len, state))


class ReplSet(Replicated):
    """A replicated set of str, bytes or int, at most ``max_bytes`` encoded bytes and
    ``max_items`` members. Iteration order is insertion order, the same everywhere
    (unlike a Python ``set`` of str, whose order changes from process to process)."""

    state_version = 1

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_items: int = DEFAULT_MAX_ITEMS) -> None:
        _check_bounds(max_bytes, max_items)
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._members: dict[Key, int] = {}  # member -> its encoded size
        self._bytes = 0

    @replicated
    def add(self, item: Key) -> bool:
        """Add ``item``; returns whether it was new."""
        return self._add_all([item]) == 1

    @replicated
    def update(self, items: list[Key]) -> int:
        """Add every item, all or none (if the bounds would be crossed); returns how
        many were new."""
        if type(items) is not list:
            raise BadArgument("update takes a list")
        return self._add_all(items)

    @replicated
    def discard(self, item: Key) -> bool:
        """Remove ``item``; returns whether it was there."""
        size = self._members.pop(_key(item), None)
        if size is None:
            return False
        self._bytes -= size
        return True

    @replicated
    def clear(self) -> int:
        """Remove every member; returns how many there were."""
        count = len(self._members)
        self._members = {}
        self._bytes = 0
        return count

    def _add_all(self, items: list[Any]) -> int:
        new: dict[Key, int] = {}
        for item in items:
            k = _key(item)
            if k not in self._members and k not in new:
                new[k] = len(pack(k))
        size = self._bytes + sum(new.values())
        count = len(self._members) + len(new)
        name = self._repl_name or "ReplSet"
        if size > self.max_bytes:
            raise CapacityExceeded(f"{name} bytes", size, self.max_bytes)
        if count > self.max_items:
            raise CapacityExceeded(f"{name} items", count, self.max_items)
        self._members.update(new)
        self._bytes = size
        return len(new)

    def contains(self, item: Key, *, linearizable: bool = False) -> bool:
        """Whether ``item`` is a member. Local and possibly stale unless ``linearizable``."""
        with self._reading(linearizable):
            return item in self._members

    def members(self, *, linearizable: bool = False) -> list[Key]:
        """The members, in insertion order. Local and possibly stale unless
        ``linearizable``."""
        with self._reading(linearizable):
            return list(self._members)

    def __len__(self) -> int:
        """Local, possibly stale."""
        return len(self._members)

    def __contains__(self, item: object) -> bool:
        """Local, possibly stale."""
        return item in self._members

    def dump_state(self) -> Any:
        return list(self._members)

    def load_state(self, version: int, state: Any) -> None:
        if version != 1 or type(state) is not list:
            raise StateError(f"ReplSet cannot load state version {version}")
        members: dict[Key, int] = {}
        for item in state:
            try:
                k = _key(item)
            except BadArgument as exc:
                raise StateError(str(exc)) from None
            members[k] = len(pack(k))
        self._members = members
        self._bytes = sum(members.values())
