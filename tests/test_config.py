"""TrainConfig: defaults, run files and stored configs of older rsuper versions (removed options)."""

from __future__ import annotations

import pytest

from rsuper.config import REMOVED_OPTIONS, TrainConfig
from rsuper.errors import ConfigError

# The removed options as an older rsuper wrote them into every run file and checkpoint (all "off").
OLD_OFF_VALUES = {
    "absence_weight": 0.0, "absence_volume_mm3": 300.0, "absence_min_prob": 0.5, "ball_attenuation_weight": 0.0,
    "organ_shift_hu": 0.0, "organ_shift_prob": 0.5, "lesion_organ_bce": 0.0, "lesion_organ_bce_organs": None,
    "lesion_pooled_dice": False, "ball_min_confidence": 0.0, "ball_region_background": True,
}


def test_removed_options_at_off_are_dropped():
    assert set(OLD_OFF_VALUES) == set(REMOVED_OPTIONS)
    assert TrainConfig.from_stored(OLD_OFF_VALUES, "old.pt") == TrainConfig()
    # A qualifier of a removed option goes with it, whatever its value (it sized an option that was off).
    assert TrainConfig.from_stored({"absence_volume_mm3": 200.0, "organ_shift_prob": 1.0}, "old.pt") == TrainConfig()


def test_removed_option_in_use_is_refused_one_line_each(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("absence_weight: 1.0\nball_region_background: false\nsteps: 5\n")
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_yaml(run)
    assert str(caught.value).splitlines() == [
        f"invalid training configuration in {run}:",
        "  absence_weight was removed: not adopted, see BENCHMARKS.md decisions; delete it from the run file, got 1.0",
        "  ball_region_background was removed: not adopted, see BENCHMARKS.md decisions; delete it from the run file, "
        "got False",
    ]
