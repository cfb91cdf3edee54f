"""Array-based binary tree math (RFC 9420 §4.2, Appendix C): leaves at even node indices, a tree of
``n`` leaves (a power of two, or the left-balanced tree it pads to) has ``2n - 1`` nodes. Node and
leaf indices are plain ints; functions raise ``ValueError`` where the RFC's are undefined (a leaf's
children, the root's parent and sibling)."""

from __future__ import annotations

__all__ = ["log2", "level", "node_width", "root", "left", "right", "parent", "sibling", "direct_path", "copath",
           "leaf_to_node", "node_to_leaf", "is_leaf", "common_ancestor"]


def log2(x: int) -> int:
    """floor(log2(x)); 0 for 0."""
    return x.bit_length() - 1 if x > 0 else 0


def level(x: int) -> int:
    """The level of node ``x``: the number of trailing one bits (leaves are level 0)."""
    if x & 1 == 0:
        return 0
    k = 0
    while (x >> k) & 1 == 1:
        k += 1
    return k


def node_width(n: int) -> int:
    """Nodes in a tree of ``n`` leaves."""
    return 0 if n == 0 else 2 * (n - 1) + 1


def root(n: int) -> int:
    """The root's node index in a tree of ``n`` leaves."""
    if n < 1:
        raise ValueError("a tree has at least one leaf")
    return (1 << log2(node_width(n))) - 1


def is_leaf(x: int) -> bool:
    return x & 1 == 0


def left(x: int) -> int:
    k = level(x)
    if k == 0:
        raise ValueError("a leaf has no children")
    return x ^ (0x01 << (k - 1))


def right(x: int) -> int:
    k = level(x)
    if k == 0:
        raise ValueError("a leaf has no children")
    return x ^ (0x03 << (k - 1))


def parent(x: int, n: int) -> int:
    """The parent of ``x`` in a tree of ``n`` leaves (RFC 9420 trees are full: ``n`` a power of two)."""
    if x == root(n):
        raise ValueError("the root has no parent")
    k = level(x)
    b = (x >> (k + 1)) & 0x01
    return (x | (1 << k)) ^ (b << (k + 1))


def sibling(x: int, n: int) -> int:
    p = parent(x, n)
    return right(p) if x < p else left(p)


def direct_path(x: int, n: int) -> list[int]:
    """Every ancestor of ``x``, from its parent up to and including the root (RFC 9420 §4.1)."""
    r = root(n)
    out = []
    while x != r:
        x = parent(x, n)
        out.append(x)
    return out


def copath(x: int, n: int) -> list[int]:
    """The siblings of ``x`` and of each node of its direct path but the root."""
    if x == root(n):
        return []
    path = [x] + direct_path(x, n)
    path.pop()  # the root
    return [sibling(y, n) for y in path]


def common_ancestor(x: int, y: int) -> int:
    """The lowest common ancestor of nodes ``x`` and ``y``."""
    lx, ly = level(x) + 1, level(y) + 1
    if lx <= ly and (x >> ly) == (y >> ly):
        return y
    if ly <= lx and (x >> lx) == (y >> lx):
        return x
    xn, yn, k = x, y, 0
    while xn != yn:
        xn >>= 1
        yn >>= 1
        k += 1
    return (xn << k) + (1 << (k - 1)) - 1


def leaf_to_node(leaf: int) -> int:
    return 2 * leaf


def node_to_leaf(node: int) -> int:
    if node & 1:
        raise ValueError(f"node {node} is not a leaf")
    return node // 2
