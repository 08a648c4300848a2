"""Groups: a state tree cut into ``n`` disjoint parts that sync independently (sans-I/O).

With ``StateSync(..., groups=n)`` (n > 1) every entry of a dict field of the root model belongs
to one group, by its key (:func:`group_of`: an int key ``k`` to ``k mod n``, a str key to the
CRC-32 of its UTF-8 bytes ``mod n``); the root's other fields (leaves, nested models, lists)
belong to group 0. Each group has its own baseline, acknowledgement and seq, so a message too
big for one datagram goes as several datagram-sized parts, each of which the client applies on
its own: a lost part leaves its groups one tick older, the others are current
(docs/wire-format/state.md, "Parts").

A *group tree* has the root model's shape (a tuple of its fields' trees) with ``None`` in the
fields the group does not own; its dict fields hold only the group's keys. :func:`diff` and
:func:`apply` work on it unchanged (the ``None`` placeholders are equal, so never sent).
"""

from __future__ import annotations

import zlib
from typing import Any, Final

from kcprpc.errors import UsageError
from kcprpc.state.delta import BadDelta, Budget, full
from kcprpc.state.schema import MAP, Node

MAX_GROUPS: Final = 256


def group_of(key: Any, n: int) -> int:
    """The group of a dict key: ``key mod n`` for an int (floor modulo: never negative), the CRC-32
    (IEEE) of the UTF-8 bytes ``mod n`` for a str."""
    if type(key) is int:
        return key % n
    return zlib.crc32(str(key).encode("utf-8", "surrogatepass")) % n


class Groups:
    """The grouping of one schema's root into ``n`` groups (1 <= n <= 256)."""

    __slots__ = ("maps", "n", "nfields", "others", "owned", "root")

    def __init__(self, root: Node, n: int) -> None:
        if not 1 <= n <= MAX_GROUPS:
            raise UsageError(f"groups must be from 1 to {MAX_GROUPS}, not {n!r}")
        self.root = root
        self.n = n
        self.nfields = len(root.fields)
        self.maps = tuple(i for i, f in enumerate(root.fields) if f.kind == MAP)
        self.others = tuple(i for i, f in enumerate(root.fields) if f.kind != MAP)
        # the root fields group 0 owns (all), and any other group (the dicts)
        self.owned = (frozenset(range(self.nfields)), frozenset(self.maps))

    def owns(self, g: int, i: int) -> bool:
        """Whether group ``g`` holds root field ``i``."""
        return g == 0 or i in self.maps

    def split(self, tree: Any) -> list[tuple[Any, ...]]:
        """A root tree cut into its ``n`` group trees."""
        n = self.n
        parts: list[list[Any]] = [[None] * self.nfields for _ in range(n)]
        for i in self.others:
            parts[0][i] = tree[i]
        for i in self.maps:
            ds: list[dict[Any, Any]] = [{} for _ in range(n)]
            if self.root.fields[i].key is int:
                for k, v in tree[i].items():
                    ds[k % n][k] = v
            else:
                for k, v in tree[i].items():
                    ds[group_of(k, n)][k] = v
            for g in range(n):
                parts[g][i] = ds[g]
        return [tuple(p) for p in parts]

    def merge(self, trees: list[Any]) -> tuple[Any, ...]:
        """The root tree of ``n`` group trees (the inverse of :meth:`split`)."""
        out = list(trees[0])
        for i in self.maps:
            d: dict[Any, Any] = {}
            for t in trees:
                d.update(t[i])
            out[i] = d
        return tuple(out)

    def body(self, g: int, tree: Any) -> dict[int, Any]:
        """A group's full tree on the wire: ``{field index: full tree}`` of the fields it owns."""
        return {i: tree[i] for i in range(self.nfields) if self.owns(g, i)}

    def full(self, g: int, body: Any, budget: Budget) -> tuple[Any, ...]:
        """Check a group's full tree from the network; :class:`BadDelta` when it does not fit
        (other fields than the group's, a key of another group)."""
        if not isinstance(body, dict):
            raise BadDelta("a group's full tree must be a map")
        want = [i for i in range(self.nfields) if self.owns(g, i)]
        if len(body) != len(want) or any(i not in body for i in want):
            raise BadDelta("a group's full tree must hold exactly its fields")
        budget.take(len(body))
        fields = self.root.fields
        out: list[Any] = [None] * self.nfields
        for i in want:
            out[i] = full(fields[i], body[i], budget)
        self.check_keys(g, out, None)
        return tuple(out)

    def check_change(self, g: int, change: Any) -> None:
        """A group's change from the network names only fields the group owns."""
        if not isinstance(change, dict):
            raise BadDelta("a model change must be a map")
        # by value: an index that is not an int (2.0, True) and equals an owned one is refused
        # when the change is applied
        if not change.keys() <= self.owned[g != 0]:
            raise BadDelta("a change to a field of another group")

    def check_keys(self, g: int, tree: Any, change: Any) -> None:
        """The dict keys added by ``change`` (all keys when ``change`` is None) belong to ``g``."""
        n = self.n
        if n == 1:
            return
        for i in self.maps:
            if change is None:
                keys: Any = tree[i]
            else:
                c = change.get(i)
                if c is None:
                    continue
                keys = c[2]  # [removed, changed, added]: changed and removed keys exist already
            for k in keys:
                if group_of(k, n) != g:
                    raise BadDelta("a key of another group")
