"""The open's reads in one round: a remote store's metadata and coordinates fetched at once.

Opening a store without consolidated metadata is a chain of reads that each wait for the one
before: the group's metadata, then its members' (the embedding array, time, band), then the
coordinates' values. Against a server 80 ms away that is three round trips before the first
chunk can be asked for. The keys an embedding cube's open will read are known beforehand, so
they are all asked for at once (the ones zarr probes anyway, .zgroup and friends, included);
zarr's open then finds its answers here. A guessed key the store lacks costs one 404 in the
same round; a key this did not guess is read as before.
"""

from __future__ import annotations

import asyncio

from zarr.core.buffer import default_buffer_prototype
from zarr.storage import WrapperStore

GROUP_KEYS = ("zarr.json", ".zgroup", ".zattrs", ".zmetadata")
COORDINATES = ("time", "band")


def opening_keys(variable: str) -> tuple[str, ...]:
    """What opening the cube `variable` reads from a Zarr v3 store: the group's and members'
    metadata and the one chunk of each 1-D coordinate (v3's default chunk key)."""
    members = (variable, *COORDINATES)
    return (
        *GROUP_KEYS,
        *(f"{name}/zarr.json" for name in members),
        *(f"{name}/c/0" for name in COORDINATES),
    )


class FirstReadsStore(WrapperStore):
    """Answers whole-object reads of keys fetched together by `fetch`, each once, then reads
    through. An answer is what the wrapped store gave: bytes, None (absent) or its error."""

    def __init__(self, store):
        super().__init__(store)
        self._answers: dict[str, object] = {}

    def __repr__(self) -> str:
        return f"FirstReadsStore({self._store!r})"

    async def fetch(self, keys) -> None:
        """Read `keys` concurrently and keep the answers for the next get of each."""
        prototype = default_buffer_prototype()

        async def one(key):
            try:
                return await self._store.get(key, prototype)
            except Exception as exc:  # raised again to whoever reads the key
                return exc

        answers = await asyncio.gather(*(one(key) for key in keys))
        self._answers.update(zip(keys, answers, strict=True))

    def forget(self) -> None:
        """Drop answers nobody asked for (the open is over; later reads go to the store)."""
        self._answers.clear()

    async def get(self, key, prototype, byte_range=None):
        if byte_range is None and key in self._answers:
            answer = self._answers.pop(key)
            if isinstance(answer, Exception):
                raise answer
            if answer is None:
                return None
            return prototype.buffer.from_bytes(answer.to_bytes())
        return await self._store.get(key, prototype, byte_range)

    def with_read_only(self, read_only: bool = False):
        return FirstReadsStore(self._store.with_read_only(read_only))


def forget_first_reads(store) -> None:
    """Forget the unasked answers of any FirstReadsStore in a chain of wrapped stores."""
    while store is not None:
        if isinstance(store, FirstReadsStore):
            store.forget()
        store = getattr(store, "_store", None)
