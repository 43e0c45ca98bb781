"""The default output channels guard against the side lock (docs/method.md §4)."""

from __future__ import annotations

from rsuper import labels
from rsuper.config import TrainConfig, default_class_names


def test_every_target_organ_has_a_side_free_organ_channel_and_no_mirror_swapped_side_channels():
    """A lesion channel beside mirror-swapped side channels (kidney_left/kidney_right) takes one side's features
    and finds tumors on that side only; the defaults keep whole organs and no left/right pair."""
    names = default_class_names()
    for organ in ("pancreas", "kidney", "liver"):
        assert labels.lesion_class(organ) in names
        assert organ in names, f"no side-free {organ} channel"
        assert not set(labels.ORGAN_MASK_CLASSES[organ]) - {organ} & set(names), f"{organ} side channels in the defaults"
    swapped = [n for n in names if labels.mirror_partner(n) not in (n, None)]
    assert swapped == [], swapped


def test_a_run_without_class_names_gets_the_defaults():
    assert TrainConfig(cache=["c"], out="o").classes == default_class_names()
