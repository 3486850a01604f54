"""COCO run-length encodings: run lengths to a mask, and pycocotools' compressed string form to run lengths."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def decode_rle(counts: Sequence[int] | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """COCO run-length encoding -> (height, width) bool mask.

    counts: run lengths over the pixels in column-major (Fortran) order, starting with a run of 0s.
    size: (height, width), COCO's order. Raises ValueError when the runs do not add up to height * width.
    """
    height, width = size
    runs = np.asarray(counts, dtype=np.int64)
    if (runs < 0).any() or int(runs.sum()) != height * width:
        raise ValueError(f"RLE runs add up to {int(runs.sum())} pixels, not {height}x{width} = {height * width}.")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    return np.repeat(values, runs).reshape((height, width), order="F")


def rle_counts_from_string(text: str) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools `rleFrString`) into run lengths.

    Each run is a variable-length number in 5-bit groups (chr(48 + bits), bit 0x20 = more groups follow,
    0x10 in the last group = negative); from the third run on, the run is stored as a difference to the run
    two places back.
    """
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise ValueError("compressed RLE string ends in the middle of a number.")
            group = ord(text[position]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts
