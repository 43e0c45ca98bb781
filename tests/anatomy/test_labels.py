import pytest

from rsuper.anatomy import labels


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("gall_bladder", "gallbladder"),
        ("urinary_bladder", "bladder"),
        ("inferior_vena_cava", "postcava"),
        ("Kidney Left", "kidney_left"),
        ("pancreas_lesion.nii.gz", "pancreatic_lesion"),
        ("segment_07", "liver_segment_7"),
        ("liver_segment_3", "liver_segment_3"),
        ("some_new_class", "some_new_class"),
    ],
)
def test_canonical_class_name(raw, canonical):
    assert labels.canonical_class_name(raw) == canonical


def test_canonical_class_name_rejects_empty():
    with pytest.raises(ValueError, match="non-empty"):
        labels.canonical_class_name("  ")


def test_organ_tables_are_consistent():
    assert set(labels.LESION_CLASS_OF_ORGAN) == set(labels.ORGAN_MASK_CLASSES)
    for organ, parts in labels.SUBSEGMENTS_OF_ORGAN.items():
        assert organ in labels.LESION_CLASS_OF_ORGAN
        for cls in parts.values():
            assert cls in labels.ORGAN_CLASSES + labels.SUBSEGMENT_CLASSES
    assert labels.lesion_class("pancreas") == "pancreatic_lesion"
    assert labels.subsegment_class("kidney", "left") == "kidney_left"
    assert labels.subsegment_class("spleen", "left") is None
    with pytest.raises(KeyError, match="known organs"):
        labels.lesion_class("brain")


@pytest.mark.parametrize(
    "raw",
    ["../../../x/liver", "liver/../../x", "/etc/liver", "..", "liver.v2", "liver\\lesion", "lïver", "liver\x00",
     "a" * 101, "liver:lesion", "~liver"],
)
def test_class_names_that_are_not_plain_are_refused_naming_the_source(raw):
    with pytest.raises(labels.ClassNameError) as info:
        labels.canonical_class_name(raw, source="data/dataset.json")
    message = str(info.value)
    assert message.startswith("data/dataset.json: class name ") and repr(raw) in message
    assert "lowercase letters, digits and underscores" in message and "\n" not in message
    assert isinstance(info.value, ValueError)


def test_aliases_are_canonicalised_before_the_check():
    assert labels.canonical_class_name("Gall-Bladder", source="x") == "gallbladder"
    assert labels.canonical_class_name("Liver Segment 07.nii.gz") == "liver_segment_7"
    assert labels.canonical_class_name("vertebrae_C1") == "vertebrae_c1"


def test_run_file_class_names_go_through_the_same_check(tmp_path):
    from rsuper.config import TrainConfig
    from rsuper.errors import ConfigError

    run = tmp_path / "run.yaml"
    run.write_text("class_names: [liver, Liver Lesion, '../../x/pancreas']\n")
    with pytest.raises(ConfigError, match=r"class name '\.\./\.\./x/pancreas' is not allowed"):
        TrainConfig.from_yaml(run)
    run.write_text("class_names: [liver, Liver Lesion]\n")
    assert TrainConfig.from_yaml(run).classes == ["liver", "liver_lesion"]
