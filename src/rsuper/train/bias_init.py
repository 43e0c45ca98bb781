"""Output-bias initialisation (docs/method.md §6): each output head's bias = the log-odds of its channel's
foreground fraction in sampled mask patches. Without it rare lesion channels tend to predict nothing for
hundreds of steps.

The heads are found by probing (:func:`output_bias_parameters`), so any network with one or more output
convolutions works.

Example:
    >>> heads = init_output_bias(model, dataset, n_mask=8, batch_size=2, seed=7)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rsuper.data.dataset import MixedBatchSampler, TrainingDataset

UNSEEN_FRACTION = 0.01  # foreground fraction of a channel never known in the sampled patches
CLIP = 1e-4  # fractions are clipped to [CLIP, 1 - CLIP]


def foreground_fractions(dataset: TrainingDataset, n_mask: int, batch_size: int, seed: int,
                         n_batches: int = 8) -> np.ndarray:
    """Per channel, the foreground fraction over the known voxels of ``n_batches`` batches of mask patches
    (sampled as in stage 1 from ``seed``), ``UNSEEN_FRACTION`` for a channel never known, clipped."""
    sampler = MixedBatchSampler(n_mask, 0, batch_size, 0.0, n_batches, seed=seed)
    fg = np.zeros(len(dataset.class_names))
    known = np.zeros(len(dataset.class_names))
    for keys in sampler:
        for key in keys:
            sample = dataset[key]
            k = (1 - sample["unknown"]).double()
            fg += (sample["label"].double() * k).sum(dim=(1, 2, 3)).numpy()
            known += k.sum(dim=(1, 2, 3)).numpy()
    return np.clip(np.where(known > 0, fg / np.maximum(known, 1), UNSEEN_FRACTION), CLIP, 1 - CLIP)


def init_output_bias(model: nn.Module, dataset: TrainingDataset, n_mask: int, batch_size: int, seed: int,
                     n_batches: int = 8) -> list[torch.Tensor]:
    """Writes the log-odds of :func:`foreground_fractions` into the bias of every output head of ``model``;
    returns the heads' bias parameters."""
    fraction = foreground_fractions(dataset, n_mask, batch_size, seed, n_batches)
    bias = torch.tensor(np.log(fraction / (1 - fraction)), dtype=torch.float32)
    heads = output_bias_parameters(model, len(fraction), 2 * model.size_divisor)
    with torch.no_grad():
        for param in heads:
            param.copy_(bias.to(param.device))
    return heads


def output_bias_parameters(model: nn.Module, num_classes: int, probe_size: int) -> list[torch.Tensor]:
    """The bias vectors that shift an output's logits one-to-one (the network's output heads).

    Found by probing: every conv with ``num_classes`` output channels and a bias is tested; it is a head
    when adding 1 to its bias adds 1 to the final or deep-supervision logits of that channel everywhere.
    """
    convs = [
        m for m in model.modules()
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) and m.out_channels == num_classes and m.bias is not None
    ]
    device = next(model.parameters()).device
    x = torch.zeros(1, model_in_channels(model), probe_size, probe_size, probe_size, device=device)
    was_training = model.training
    model.eval()
    heads = []
    with torch.no_grad():
        base = [o.clone() for o in model(x)]
        for conv in convs:
            conv.bias[0] += 1.0
            shifted = model(x)
            conv.bias[0] -= 1.0
            for before, after in zip(base, shifted):
                delta = after - before
                if torch.allclose(delta[:, 0], torch.ones_like(delta[:, 0]), atol=1e-4) and torch.allclose(
                    delta[:, 1:], torch.zeros_like(delta[:, 1:]), atol=1e-4
                ):
                    heads.append(conv.bias)
                    break
    model.train(was_training)
    return heads


def model_in_channels(model: nn.Module) -> int:
    """Input channels of the first convolution."""
    first = next(m for m in model.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)))
    return first.in_channels
