"""`rsuper extract` / `rsuper extract-score`: outputs, resume, bad rows, compare."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.reports.tables import read_tumors_csv
from rsuper.synthetic.fake_llm import FakeLLMServer

runner = CliRunner()
DATA = Path(__file__).parents[1] / "fixtures" / "reports"


def _bad_reports(path: Path) -> Path:
    big = "The liver is normal. " * 50_000 + "2 cm cyst in the left kidney."
    rows = [
        b"Encrypted Accession Number,Findings\n",
        b"A1,2.3 cm mass in the pancreatic head.\n",
        b"A2,\n",  # empty report
        b'A3,"No focal lesion. 1 cm cyst in segment 2 \xff\xfe of the liver."\n',  # not UTF-8
        b"A1,duplicate id row\n",
        b'A4,"' + big.encode() + b'"\n',  # ~1 MB report
        b"A5,No pancreatic mass.\n",
    ]
    path.write_bytes(b"".join(rows))
    return path


def test_extract_handles_bad_rows_and_resumes(tmp_path):
    csv = _bad_reports(tmp_path / "reports.csv")
    original = csv.read_bytes()
    out = tmp_path / "out"
    result = runner.invoke(app, ["extract", str(csv), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "empty report for 'A2'" in _flat(result)
    assert "duplicate id 'A1'" in _flat(result) and "not UTF-8" in _flat(result)
    assert csv.read_bytes() == original  # input never modified
    findings = read_tumors_csv(out / "tumors.csv")
    assert set(findings) == {"A1", "A3", "A4", "A5"}  # A2 failed: recorded, but not called "no lesion"
    assert [(x.organ, x.location, x.size_mm) for x in findings["A1"].lesions] == [("pancreas", ["head"], [23.0])]
    assert [(x.organ, x.location) for x in findings["A3"].lesions] == [("liver", ["segment 2"])]
    assert findings["A4"].lesions[0].organ == "kidney" and findings["A5"].no_lesion
    lines = [json.loads(line) for line in (out / "findings.jsonl").read_text().splitlines()]
    assert {line["case_id"] for line in lines if line["error"]} == {"A2"}
    assert all(len(line["report_sha256"]) == 64 and line["backend"] == "rules" for line in lines)
    cases = pd.read_csv(out / "cases.csv")
    assert list(cases["BDMAP ID"]) == ["A1", "A3", "A4", "A5"]
    again = runner.invoke(app, ["extract", str(csv), "--out", str(out)])
    assert again.exit_code == 0 and "4 reused" in _flat(again)
    assert len((out / "findings.jsonl").read_text().splitlines()) == len(lines) + 1  # only A2 retried


def _flat(result) -> str:
    return " ".join(result.output.split())


def test_missing_columns_are_clear_errors(tmp_path):
    csv = tmp_path / "reports.csv"
    csv.write_text("patient,Report\nx,text\n")
    result = runner.invoke(app, ["extract", str(csv), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "no case id column" in _flat(result) and "'patient'" in _flat(result)
    result = runner.invoke(app, ["extract", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "not found" in _flat(result)
    result = runner.invoke(app, ["extract", str(csv), "--out", str(tmp_path / "o"), "--backend", "llm"])
    assert result.exit_code != 0 and "--base-url" in _flat(result)


def test_score_labelled_set_and_compare_llm_with_rules(tmp_path):
    rules_dir = tmp_path / "rules"
    assert runner.invoke(app, ["extract", str(DATA / "reports.csv"), "--out", str(rules_dir)]).exit_code == 0
    scored = runner.invoke(app, ["extract-score", str(DATA / "gold"), str(rules_dir), "--json", str(tmp_path / "s.json")])
    assert scored.exit_code == 0, scored.output
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["organs"]["pancreas"]["presence_f1"] >= 0.95
    small = tmp_path / "small.csv"
    pd.read_csv(DATA / "reports.csv").head(6).to_csv(small, index=False)
    with FakeLLMServer() as server:
        result = runner.invoke(app, [
            "extract", str(small), "--out", str(tmp_path / "llm"), "--backend", "llm", "--base-url", server.base_url,
            "--model", "fake", "--compare", str(rules_dir),
        ])
    assert result.exit_code == 0, result.output
    assert "scored against" in _flat(result)
    llm = read_tumors_csv(tmp_path / "llm" / "tumors.csv")
    assert len(llm) == 6 and all(case.backend == "llm" for case in llm.values())


def test_windows_1252_reports_keep_the_times_sign(tmp_path):
    csv = tmp_path / "r.csv"
    csv.write_bytes(
        "BDMAP ID,Report\nA,3.1 × 2.4 cm mass in the pancreatic head.\nB,1.2 cm cyst in segment 7.\n".encode("cp1252")
    )
    result = runner.invoke(app, ["extract", str(csv), "--out", str(tmp_path / "out")], terminal_width=240)
    assert result.exit_code == 0, result.output
    found = read_tumors_csv(tmp_path / "out" / "tumors.csv")
    assert found["A"].lesions[0].size_mm == [31.0, 24.0]  # not 3.1 mm
    assert found["B"].lesions[0].size_mm == [12.0]
    assert "not UTF-8" in _flat(result) and "Windows-1252" in _flat(result) and "(A)" in _flat(result)


def _reports(path: Path, rows: dict[str, str]) -> Path:
    pd.DataFrame({"BDMAP ID": list(rows), "Report": list(rows.values())}).to_csv(path, index=False)
    return path


def test_changed_report_text_is_extracted_again(tmp_path):
    out = tmp_path / "out"
    csv = _reports(tmp_path / "r.csv", {"A": "2 cm cyst in the left kidney.", "B": "No pancreatic mass."})
    assert runner.invoke(app, ["extract", str(csv), "--out", str(out)]).exit_code == 0
    _reports(csv, {"A": "3 cm mass in the pancreatic head.", "B": "No pancreatic mass."})
    again = runner.invoke(app, ["extract", str(csv), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "1 extracted" in _flat(again) and "1 reused" in _flat(again)
    lesions = read_tumors_csv(out / "tumors.csv")["A"].lesions
    assert [(x.organ, x.location, x.size_mm) for x in lesions] == [("pancreas", ["head"], [30.0])]


def test_torn_findings_line_is_repaired_before_appending(tmp_path):
    out = tmp_path / "out"
    csv = _reports(tmp_path / "r.csv", {"A": "2 cm cyst in the left kidney.", "B": "1 cm cyst in segment 7."})
    assert runner.invoke(app, ["extract", str(csv), "--out", str(out)]).exit_code == 0
    findings = out / "findings.jsonl"
    first, second = findings.read_text().splitlines()
    findings.write_text(first + "\n" + second[: len(second) // 2])  # a crash while writing B's line
    again = runner.invoke(app, ["extract", str(csv), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert set(read_tumors_csv(out / "tumors.csv")) == {"A", "B"}  # B's new line was not glued to the torn one
    assert "torn last line" in _flat(again) and "1 extracted" in _flat(again)
    assert [json.loads(line)["case_id"] for line in findings.read_text().splitlines()] == ["A", "B"]


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_extract_exits_nonzero_when_the_llm_server_is_down(tmp_path):
    csv = _reports(tmp_path / "r.csv", {"A": "2 cm cyst in the left kidney.", "B": "No pancreatic mass."})
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    result = runner.invoke(app, [
        "extract", str(csv), "--out", str(tmp_path / "out"), "--backend", "llm", "--base-url", url,
        "--model", "m", "--max-retries", "0",
    ], terminal_width=240)
    assert result.exit_code == 1, result.output
    flat = _flat(result)
    assert "2 failed" in flat and "A, B" in flat and url in flat


def test_extract_exits_nonzero_when_one_report_failed(tmp_path):
    csv = _reports(tmp_path / "r.csv", {"A": "2 cm cyst in the left kidney.", "B": "No mass. [[nonjson]]"})
    with FakeLLMServer() as server:
        args = ["extract", str(csv), "--out", str(tmp_path / "out"), "--backend", "llm", "--base-url",
                server.base_url, "--model", "fake"]
        result = runner.invoke(app, args, terminal_width=240)
    assert result.exit_code == 1, result.output
    assert "1 extracted" in _flat(result) and "1 failed" in _flat(result) and "B" in _flat(result)
    assert set(read_tumors_csv(tmp_path / "out" / "tumors.csv")) == {"A"}
