"""The layout of the random effects u in the inner problem: which leaves form the G groups
(U is (G, K): row g holds group g's effects) and which form the border of a bordered
block-diagonal Hessian (:mod:`jaxmle.random.arrow`: U is then flat, G·K then B)."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

import jaxmle.random.arrow as _arrow


class Border(NamedTuple):
    """The static shape of a bordered block-diagonal inner Hessian (:mod:`~jaxmle.random.arrow`):
    G groups of K, then the border."""

    G: int
    K: int


@dataclasses.dataclass(frozen=True)
class Layout:
    """Static: the random leaves' names and shapes, and the groups (G) they form; the
    ``border`` leaves (another grouping factor, REML's fixed effects) are coupled to every
    group (a bordered block-diagonal Hessian: U is then flat, the groups' G·K then B)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    n_groups: int                       # G (1: dense)
    band: int = 0                       # 1: each group coupled to its neighbours only
    border: tuple[str, ...] = ()        # leaves outside the groups, coupled to all of them

    @property
    def grouped(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return tuple((n, s) for n, s in zip(self.names, self.shapes) if n not in self.border)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Columns kᵢ of each grouped leaf in U."""
        return tuple(math.prod(s) // self.n_groups for _, s in self.grouped)

    @property
    def block(self) -> int:
        """K: the size of one group's block."""
        return sum(self.sizes)

    @property
    def border_size(self) -> int:
        return sum(math.prod(s) for n, s in zip(self.names, self.shapes) if n in self.border)

    @property
    def q(self) -> int:
        return self.n_groups * self.block + self.border_size

    @property
    def structure(self):
        """What the inner functions dispatch on: 0 (block-diagonal), 1 (block-tridiagonal)
        or :class:`Border`."""
        return Border(self.n_groups, self.block) if self.border else self.band

    def pack(self, u: dict) -> jax.Array:
        """{name: leaf} → U (G, K), or flat (G·K + B) with a border."""
        U = jnp.concatenate([jnp.reshape(u[n], (self.n_groups, k))
                             for (n, _), k in zip(self.grouped, self.sizes)], axis=1)
        if not self.border:
            return U
        rest = [jnp.ravel(u[n]) for n in self.names if n in self.border]
        return _arrow.join(U, jnp.concatenate(rest).astype(U.dtype))

    def unpack(self, U: jax.Array) -> dict:
        """:meth:`pack`'s inverse."""
        out, c = {}, 0
        if self.border:
            U, rest = _arrow.split(U, self.n_groups, self.block)
            for n, s in zip(self.names, self.shapes):
                if n in self.border:
                    out[n] = jnp.reshape(rest[c:c + math.prod(s)], s)
                    c += math.prod(s)
            c = 0
        for (n, s), k in zip(self.grouped, self.sizes):
            out[n] = jnp.reshape(U[:, c:c + k], s)
            c += k
        return {n: out[n] for n in self.names}
