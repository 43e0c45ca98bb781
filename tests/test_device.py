"""--device names: auto picks CUDA only when present; an unavailable CUDA device is a ConfigError."""

from __future__ import annotations

import pytest
import torch

from rsuper.device import resolve_device
from rsuper.errors import ConfigError


def test_names_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda:1") if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto", local_rank=1) == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_says_so():
    with pytest.raises(ConfigError, match="--device cpu"):
        resolve_device("cuda")
