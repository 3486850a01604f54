"""engine.data.rle: COCO run lengths, plain and compressed."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data import decode_rle, rle_counts_from_string
from tests.data_helpers import H, W, known_mask, rle_encode, rle_string


def test_rle_string_codec():
    assert rle_counts_from_string("1232") == [1, 2, 3, 4]  # 4th stored as 4 - 2
    counts = rle_encode(known_mask())
    assert counts[0] == 0 and sum(counts) == H * W
    assert rle_counts_from_string(rle_string(counts)) == counts
    assert np.array_equal(decode_rle(counts, (H, W)), known_mask())
    with pytest.raises(ValueError, match="add up to"):
        decode_rle([5, 5], (H, W))
