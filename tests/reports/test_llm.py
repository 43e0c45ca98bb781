"""LLM backend against a real local OpenAI-compatible HTTP server (rsuper.synthetic.fake_llm)."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from rsuper.reports.cache import AnswerCache, cache_key
from rsuper.reports.llm import InvalidAnswer, LLMExtractor, LLMOptions, parse_answer
from rsuper.reports.pipeline import load_findings, run_extraction
from rsuper.reports.prompt import PROMPT_VERSION
from rsuper.synthetic.fake_llm import FakeLLMServer

REPORT = "FINDINGS: 2.3 x 1.9 cm hypoenhancing mass in the pancreatic head. Liver: no focal lesion."


def _run(server, reports, cache=None, **kw):
    options = LLMOptions(base_url=server.base_url, model="fake-model", backoff_s=0.01, timeout_s=5, **kw)
    extractor = LLMExtractor(options, cache)
    done = []
    results = asyncio.run(extractor.extract_many(reports, on_done=done.append))
    assert len(done) == len(reports)
    return results, extractor


def test_correct_answer_is_validated_and_tagged():
    with FakeLLMServer() as server:
        (found,), extractor = _run(server, [("c1", REPORT)])
    assert found.error is None and found.backend == "llm" and found.model == "fake-model"
    assert found.prompt_version == PROMPT_VERSION
    assert [(x.organ, x.location, x.size_mm) for x in found.lesions] == [("pancreas", ["head"], [23.0, 19.0])]
    assert server.response_formats == ["json_schema"] and extractor.requests_made == 1


def test_500_errors_are_retried_then_reported():
    with FakeLLMServer() as server:
        (ok, failed), _ = _run(server, [("ok", REPORT + " [[fail500:2]]"), ("bad", REPORT + " [[fail500:99]]")],
                               max_retries=3)
    assert ok.error is None and ok.lesions
    assert failed.error is not None and "InternalServerError" in failed.error and not failed.lesions
    assert server.requests == 3 + 4  # 2 failures + success; 1 try + 3 retries


def test_non_json_answer_is_repaired_once():
    with FakeLLMServer() as server:
        (repaired, broken, wrong_schema), _ = _run(
            server, [("r", REPORT + " [[nonjson-once]]"), ("b", REPORT + " [[nonjson]]"), ("s", REPORT + " [[badschema]]")]
        )
    assert repaired.error is None and repaired.lesions[0].organ == "pancreas"
    assert broken.error.startswith("LLM answer invalid after one repair request: not JSON")
    assert "schema" in wrong_schema.error
    assert server.requests == 6  # each case: answer + one repair


def test_timeout_is_an_error_not_a_hang():
    with FakeLLMServer() as server:
        options = LLMOptions(base_url=server.base_url, model="m", timeout_s=0.3, max_retries=1, backoff_s=0.01)
        (found,) = asyncio.run(LLMExtractor(options).extract_many([("slow", REPORT + " [[slow:1.5]]")], print))
    assert found.error is not None and "Timeout" in found.error


def test_falls_back_when_json_schema_is_unsupported():
    with FakeLLMServer(reject_json_schema=True) as server:
        (found, second), _ = _run(server, [("a", REPORT), ("b", REPORT + " again")], concurrency=1)
    assert found.error is None and second.error is None
    assert server.response_formats == ["json_schema", "json_object", "json_object"]


def test_cache_makes_reruns_free(tmp_path):
    cache_path = tmp_path / "cache.jsonl"
    reports = [(f"c{i}", f"{REPORT} Case {i}.") for i in range(5)]
    with FakeLLMServer() as server:
        first, _ = _run(server, reports, AnswerCache(cache_path))
        assert server.requests == 5
        second, extractor = _run(server, reports, AnswerCache(cache_path))
        assert server.requests == 5 and extractor.requests_made == 0
    assert [f.lesions for f in first] == [f.lesions for f in second]


def test_concurrency_is_bounded_and_faster():
    reports = [(f"c{i}", f"{REPORT} Case {i}.") for i in range(6)]
    timings = {}
    with FakeLLMServer(delay_s=0.3) as server:
        for concurrency in (1, 6):
            start = time.perf_counter()
            _run(server, reports, concurrency=concurrency)
            timings[concurrency] = time.perf_counter() - start
    assert timings[1] >= 6 * 0.3  # one at a time really waits for each answer
    assert timings[6] < timings[1] / 2


def test_parse_answer_tolerates_fences_and_rejects_garbage():
    assert parse_answer('```json\n{"lesions": []}\n```').lesions == []
    assert parse_answer('Here: {"lesions": [{"organ": "kidney", "location": ["left"]}]}').lesions[0].organ == "kidney"
    with pytest.raises(InvalidAnswer):
        parse_answer("no json here")
    with pytest.raises(InvalidAnswer):
        parse_answer('{"lesions": [{"organ": "liver", "size_mm": [-1]}]}')


def test_pipeline_llm_resumes_without_requests(tmp_path, monkeypatch):
    monkeypatch.setenv("RSUPER_TEST_KEY", "sk-secret-value")
    csv = tmp_path / "reports.csv"
    csv.write_text('BDMAP ID,Report\nA,"' + REPORT + '"\nB,"' + REPORT + ' [[nonjson]]"\n', encoding="utf-8")
    with FakeLLMServer() as server:
        options = LLMOptions(base_url=server.base_url, model="fake", api_key_env="RSUPER_TEST_KEY", backoff_s=0.01)
        summary = run_extraction(csv, tmp_path / "out", backend="llm", llm_options=options)
        assert (summary.done, summary.failed) == (1, 1)
        before = server.requests
        again = run_extraction(csv, tmp_path / "out", backend="llm", llm_options=options)
        assert again.reused == 1 and server.requests == before + 2  # only the failed row is asked again
    text = "".join(p.read_text() for p in (tmp_path / "out").iterdir())
    assert "sk-secret-value" not in text


def test_torn_cache_line_is_repaired_before_appending(tmp_path):
    cache_path = tmp_path / "cache.jsonl"
    cache_path.write_text('{"key": "k1", "answer": {"lesions": []}}\n{"key": "k2", "ans')  # crash mid-line
    cache = AnswerCache(cache_path)
    assert cache.get("k1") == {"lesions": []} and cache.get("k2") is None
    cache.put("k3", {"lesions": []})
    assert AnswerCache(cache_path).get("k3") == {"lesions": []}  # not glued to the torn line
    assert any("torn last line" in note for note in cache.notes)


def test_invalid_cached_answer_is_asked_again(tmp_path):
    cache_path = tmp_path / "cache.jsonl"
    key = cache_key(REPORT, "fake-model", PROMPT_VERSION)
    bad = {"lesions": [{"organ": "liver", "size_mm": [1, 2, 3, 4, 5]}]}  # e.g. written by an older schema
    cache_path.write_text(json.dumps({"key": key, "answer": bad}) + "\n")
    with FakeLLMServer() as server:
        (found,), extractor = _run(server, [("c1", REPORT)], AnswerCache(cache_path))
    assert found.error is None and found.lesions[0].organ == "pancreas" and server.requests == 1
    assert any("c1" in w and "cached" in w for w in extractor.warnings)
    assert AnswerCache(cache_path).get(key)["lesions"][0]["organ"] == "pancreas"  # the good answer replaces it


def test_pipeline_reuses_findings_only_for_the_same_model_and_prompt(tmp_path):
    csv = tmp_path / "reports.csv"
    csv.write_text('BDMAP ID,Report\nA,"' + REPORT + '"\n', encoding="utf-8")
    out = tmp_path / "out"
    with FakeLLMServer() as server:
        def run(model):
            options = LLMOptions(base_url=server.base_url, model=model, backoff_s=0.01)
            return run_extraction(csv, out, backend="llm", llm_options=options)

        assert (run("m1").done, run("m1").reused) == (1, 1)
        other = run("m2")
        assert (other.done, other.reused) == (1, 0)
        findings = out / "findings.jsonl"
        lines = [json.loads(line) for line in findings.read_text().splitlines()]
        lines[-1]["prompt_version"] = "rsuper-extract-v0"  # written by an older prompt
        findings.write_text("".join(json.dumps(line) + "\n" for line in lines))
        assert (run("m2").done, run("m2").reused) == (1, 1)
    assert load_findings(findings)["A"].model == "m2"


def test_connection_error_names_the_base_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = LLMOptions(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=0)
    (found,) = asyncio.run(LLMExtractor(options).extract_many([("a", REPORT)], lambda _: None))
    assert f"http://127.0.0.1:{port}/v1" in found.error and "--base-url" in found.error
