"""Bit packing of the binary target channels for one nearest-neighbour resampling."""

from __future__ import annotations

import numpy as np
import torch

from rsuper.data.augment import pack_bits, unpack_bits


def test_bit_packing_round_trip():
    rng = np.random.default_rng(0)
    targets = torch.from_numpy(rng.integers(0, 2, (34, 5, 6, 7), dtype=np.uint8))
    packed = pack_bits(targets)
    assert packed.shape == (2, 5, 6, 7) and packed.dtype == torch.float32
    assert torch.equal(unpack_bits(packed, 34), targets)
