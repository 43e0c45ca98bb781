"""Schema, vocabulary and R-Super-compatible tables (docs/method.md §2, §10)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from pydantic import ValidationError

from rsuper.reports.schema import CaseFindings, Lesion, volume_from_diameters
from rsuper.reports.tables import (
    TUMOR_COLUMNS,
    read_cases_csv,
    read_reports_csv,
    read_tumors_csv,
    write_cases_csv,
    write_tumors_csv,
)
from rsuper.reports.vocabulary import canonical_organ, normalise_location, segment_numbers


@pytest.mark.parametrize(
    "diameters, volume",
    [([11, 10], 604.8), ([20], 4188.8), ([40, 30, 30], 18849.6)],
)
def test_volume_reference_numbers(diameters, volume):
    assert volume_from_diameters(diameters) == pytest.approx(volume, abs=0.05)


@pytest.mark.parametrize("bad", [[], [1, 2, 3, 4], [0], [-3, 2], [math.nan]])
def test_volume_rejects_bad_diameters(bad):
    with pytest.raises(ValueError):
        volume_from_diameters(bad)


def test_lesion_normalises_organ_and_location():
    lesion = Lesion(organ="Pancreatic", location=["uncinate process", "neck"], size_mm=[11, 10])
    assert lesion.organ == "pancreas" and lesion.location == ["head"]
    assert lesion.largest_diameter_mm == 11
    assert lesion.volume_mm3 == pytest.approx(604.8, abs=0.05)
    liver = Lesion(organ="hepatic", location=["Segment VIII", "S7"])
    assert liver.location == ["segment 7", "segment 8"] and liver.volume_mm3 is None
    assert Lesion(organ="liver", location="right lobe").location == [f"segment {i}" for i in (5, 6, 7, 8)]
    assert Lesion(organ="renal", location=["Left"]).location == ["left"]


def test_multiple_row_keeps_only_side():
    lesion = Lesion(organ="kidney", location=["left"], size_mm=[12], multiple=True)
    assert lesion.size_mm is None and lesion.location == ["left"]
    assert Lesion(organ="liver", location=["segment 2"], multiple=True).location == []


def test_lesion_rejects_invalid_values():
    with pytest.raises(ValidationError):
        Lesion(organ="liver", size_mm=[1, 2, 3, 4])
    with pytest.raises(ValidationError):
        Lesion(organ="liver", size_mm=[-4])
    with pytest.raises(ValidationError):
        Lesion(organ="liver", attenuation="purple")


def test_vocabulary():
    assert canonical_organ("Adrenal") == "adrenal gland"
    assert canonical_organ("gall bladder") == "gallbladder"
    assert segment_numbers("lesion in segments 6/7 and segment IVa") == [4, 6, 7]
    assert segment_numbers("lesion in segment 5, 1.5 cm") == [5]
    assert normalise_location("pancreas", "neck-body junction") == ["head", "body"]
    assert normalise_location("liver", "u") == []


def test_case_findings_no_lesion_and_error():
    assert CaseFindings(case_id="a").no_lesion
    assert not CaseFindings(case_id="a", error="boom").no_lesion


def _findings():
    return [
        CaseFindings(
            case_id="BDMAP_1",
            lesions=[
                Lesion(organ="liver", location=["segment 7", "segment 8"], size_mm=[11, 10], type="metastasis"),
                Lesion(organ="liver", multiple=True),
                Lesion(organ="pancreas", location=["head"], size_mm=[25]),
            ],
        ),
        CaseFindings(case_id="BDMAP_2"),
        CaseFindings(case_id="BDMAP_3", lesions=[Lesion(organ="kidney", location=["left"])]),
        CaseFindings(case_id="BDMAP_4", error="LLM answer was not JSON"),
        CaseFindings(case_id="BDMAP_5", lesions=[Lesion(organ="spleen", size_mm=[9])]),
    ]


def test_tumors_table_round_trip(tmp_path):
    path = write_tumors_csv(_findings(), tmp_path / "tumors.csv")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert tuple(frame.columns) == TUMOR_COLUMNS
    case1 = frame[frame["BDMAP ID"] == "BDMAP_1"]
    assert list(case1["Tumor ID"]) == ["tumor 1", "tumor 2", "tumor 3"]
    assert list(case1["Standardized Location"]) == ["segment 7 / segment 8", "u", "head"]
    assert list(case1["Tumor Size (mm)"]) == ["11 x 10", "multiple", "25"]
    # Unknow Tumor Size is per organ: liver has a multiple row, pancreas is fully sized.
    assert list(case1["Unknow Tumor Size"]) == ["yes", "yes", "no"]
    assert float(case1["Estimated Tumor Volume (mm3)"].iloc[0]) == pytest.approx(604.8, abs=0.05)
    assert "BDMAP_4" not in set(frame["BDMAP ID"])  # failures are not "no lesion"
    back = read_tumors_csv(path)
    assert set(back) == {"BDMAP_1", "BDMAP_2", "BDMAP_3", "BDMAP_5"}
    assert back["BDMAP_2"].no_lesion
    assert [lesion.model_dump(exclude={"evidence"}) for lesion in back["BDMAP_1"].lesions] == [
        lesion.model_dump(exclude={"evidence"}) for lesion in _findings()[0].lesions
    ]


def test_cases_table(tmp_path):
    path = write_cases_csv(_findings(), tmp_path / "cases.csv")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False).set_index("BDMAP ID")
    assert "number of pancreatic lesion instances" in frame.columns
    assert "largest spleen lesion diameter (cm)" in frame.columns
    assert frame.loc["BDMAP_1", "number of liver lesion instances"] == "2"  # multiple row counts as one
    assert frame.loc["BDMAP_1", "largest liver lesion diameter (cm)"] == "1.1"
    assert frame.loc["BDMAP_2", "largest liver lesion diameter (cm)"] == "0.0"
    assert frame.loc["BDMAP_3", "largest kidney lesion diameter (cm)"] == ""  # lesion without size
    assert frame.loc["BDMAP_2", "no lesion"] == "1" and frame.loc["BDMAP_1", "no lesion"] == "0"
    summary = read_cases_csv(path)
    assert summary["BDMAP_1"]["liver"] == (2, 11.0)
    assert summary["BDMAP_3"]["kidney"] == (1, None)
    assert summary["BDMAP_2"] == {}


def test_reads_rsuper_style_metadata(tmp_path):
    """R-Super-style per-tumor metadata: extra columns, cm sizes, ``×``/``,`` separators, ``u``, ``multiple``."""
    path = tmp_path / "metadata.csv"
    pd.DataFrame(
        {
            "BDMAP ID": ["BDMAP_A", "BDMAP_A", "BDMAP_A", "BDMAP_B", "BDMAP_C"],
            "Tumor ID": ["tumor 1", "tumor 2", "tumor 3", "no lesion", "tumor 1"],
            "Standardized Organ": ["pancreas", "kidney", "liver", "", "Liver"],
            "Standardized Location": ["pancreatic head", "right", "u", "", "segment 7 / segment 8"],
            "Tumor Size (mm)": ["25 × 20", "1.2 x 1.0 cm", "multiple", "", "30,20,10"],
            "Unknow Tumor Size": ["no", "no", "yes", "", "no"],
            "Report": ["...", "...", "...", "...", "..."],
            "Some Other Column": [1, 2, 3, 4, 5],
        }
    ).to_csv(path, index=False)
    cases = read_tumors_csv(path)
    a = cases["BDMAP_A"].lesions
    assert [(x.organ, x.location, x.size_mm, x.multiple) for x in a] == [
        ("pancreas", ["head"], [25.0, 20.0], False),
        ("kidney", ["right"], [12.0, 10.0], False),
        ("liver", [], None, True),
    ]
    assert cases["BDMAP_B"].no_lesion
    assert cases["BDMAP_C"].lesions[0].size_mm == [30.0, 20.0, 10.0]


def test_reads_rsuper_style_per_ct_table(tmp_path):
    path = tmp_path / "per_ct.csv"
    pd.DataFrame(
        {
            "Encrypted Accession Number": ["X1", "X2"],
            "number of pancreatic lesion instances": [1, 0],
            "largest pancreatic lesion diameter (cm)": [2.5, 0],
            "number of kidney lesion instances": [2, 0],
            "largest kidney lesion diameter (cm)": ["", 0],
            "Report": ["a", "b"],
        }
    ).to_csv(path, index=False)
    summary = read_cases_csv(path)
    assert summary["X1"] == {"pancreas": (1, 25.0), "kidney": (2, None)}
    assert summary["X2"] == {}


def test_missing_id_column_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"patient": ["a"], "Standardized Organ": ["liver"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="no case id column"):
        read_tumors_csv(path)


def test_reads_windows_1252_metadata(tmp_path):
    """A metadata CSV saved as Windows-1252 is decoded as such (``×`` kept), with a warning naming the row."""
    path = tmp_path / "metadata.csv"
    text = "BDMAP ID,Standardized Organ,Tumor Size (mm),Evidence\nA,pancreas,25 × 20,2.5 × 2.0 cm mass\n"
    path.write_bytes(text.encode("cp1252"))
    with pytest.warns(UserWarning, match=r"not UTF-8.*\(A\)"):
        (lesion,) = read_tumors_csv(path)["A"].lesions
    assert lesion.size_mm == [25.0, 20.0] and lesion.evidence == "2.5 × 2.0 cm mass"


def test_reports_csv_with_bom_reads_and_utf16_is_a_clear_error(tmp_path):
    path = tmp_path / "reports.csv"
    path.write_bytes("BDMAP ID,Report\nA,2 cm cyst\n".encode("utf-8-sig"))
    table = read_reports_csv(path)
    assert table.frame["id"].tolist() == ["A"] and table.warning is None
    path.write_bytes("BDMAP ID,Report\nA,2 cm cyst\n".encode("utf-16"))
    with pytest.raises(ValueError, match="UTF-16"):
        read_reports_csv(path)
