"""Chunk-interval arithmetic: which needle bytes make up which file bytes.

A file is a sorted list of non-overlapping pieces (file_offset, length, fid, needle_offset, ...);
gaps are holes that read as zeros. A write lays a new piece over the list, cutting the older
pieces it covers; a truncate cuts the list at a size. The master keeps lists normalised with
`overlay`/`truncate`; readers map a byte range to pieces with `pieces_for_range`. Pure
functions over `Piece`, so both sides agree and unit tests need no network.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Piece:
    file_offset: int
    length: int
    fid: str
    needle_offset: int = 0
    needle_size: int = 0
    crc32c: int = 0

    @property
    def end(self) -> int:
        return self.file_offset + self.length

    def cut(self, start: int, end: int) -> Piece:
        """The part of this piece that lies in [start, end) of the file (which must overlap)."""
        start = max(start, self.file_offset)
        end = min(end, self.end)
        return replace(
            self,
            file_offset=start,
            length=end - start,
            needle_offset=self.needle_offset + (start - self.file_offset),
        )


def overlay(pieces: list[Piece], new: Iterable[Piece]) -> list[Piece]:
    """`pieces` (sorted, disjoint) with each of `new` laid on top in order."""
    out = list(pieces)
    for piece in new:
        if piece.length <= 0:
            continue
        kept: list[Piece] = []
        for old in out:
            if old.end <= piece.file_offset or old.file_offset >= piece.end:
                kept.append(old)
                continue
            if old.file_offset < piece.file_offset:
                kept.append(old.cut(old.file_offset, piece.file_offset))
            if old.end > piece.end:
                kept.append(old.cut(piece.end, old.end))
        kept.append(piece)
        kept.sort(key=lambda p: p.file_offset)
        out = kept
    return out


def truncate(pieces: list[Piece], size: int) -> list[Piece]:
    """`pieces` cut at `size`: bytes past it are gone, so growing later reads zeros."""
    out = []
    for p in pieces:
        if p.file_offset >= size:
            continue
        out.append(p.cut(p.file_offset, size) if p.end > size else p)
    return out


class PieceMap:
    """A file's pieces, sorted, with their start offsets precomputed: built once per chunk
    list, so each read (the FUSE driver sees one per 128 KiB) costs a bisection, not a sort."""

    __slots__ = ("pieces", "starts")

    def __init__(self, pieces: Iterable[Piece]):
        self.pieces = sorted(pieces, key=lambda p: p.file_offset)
        self.starts = [p.file_offset for p in self.pieces]

    def range(self, offset: int, length: int) -> list[Piece]:
        """The parts of the pieces inside [offset, offset + length)."""
        if length <= 0:
            return []
        end = offset + length
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        out = []
        pieces = self.pieces
        while i < len(pieces) and pieces[i].file_offset < end:
            p = pieces[i]
            if p.end > offset:
                out.append(p if p.file_offset >= offset and p.end <= end else p.cut(offset, end))
            i += 1
        return out


def pieces_for_range(pieces: list[Piece], offset: int, length: int) -> list[Piece]:
    """The parts of `pieces` (sorted, disjoint) inside [offset, offset + length)."""
    return PieceMap(pieces).range(offset, length)


def fids(pieces: Iterable[Piece]) -> set[str]:
    return {p.fid for p in pieces}


def covered_prefix(pieces: list[Piece]) -> int:
    """How many bytes from offset 0 the sorted, non-overlapping `pieces` cover with no gap."""
    end = 0
    for p in pieces:
        if p.file_offset > end:
            break
        end = max(end, p.end)
    return end
