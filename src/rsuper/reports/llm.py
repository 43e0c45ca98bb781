"""LLM backend: any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp server, OpenAI).

Temperature 0, a ``max_tokens`` cap, a per-request timeout, retries with exponential backoff on
connection errors, timeouts, 429 and 5xx, bounded concurrency (``asyncio.Semaphore``), structured output
(``json_schema``, falling back to ``json_object`` then plain text when the server rejects it), pydantic
validation with one repair request on an invalid answer, and an on-disk answer cache so reruns and
crashes never ask twice. The API key is read from an environment variable and never printed.

Example:
    >>> options = LLMOptions(base_url="http://localhost:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
    >>> extractor = LLMExtractor(options, AnswerCache("out/llm_cache.jsonl"))
    >>> findings = asyncio.run(extractor.extract_many([("case1", "FINDINGS: ...")], on_done=print))
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import openai
from pydantic import ValidationError

from rsuper.reports.cache import AnswerCache, cache_key
from rsuper.reports.prompt import PROMPT_VERSION, LLMAnswer, answer_json_schema, build_messages, repair_message
from rsuper.reports.schema import CaseFindings

BACKEND = "llm"
_RESPONSE_FORMATS = ("json_schema", "json_object", "none")
_RETRYABLE = (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError, openai.InternalServerError)


@dataclass
class LLMOptions:
    """Endpoint and request policy. ``timeout_s`` is per request; backoff doubles from ``backoff_s``."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_tokens: int = 2048
    max_report_chars: int = 40_000
    response_format: str = "json_schema"


class InvalidAnswer(ValueError):
    """The model's answer is not JSON or does not follow the schema."""


def parse_answer(content: str | None) -> LLMAnswer:
    """Validates a model answer (code fences and text around the JSON object tolerated)."""
    text = (content or "").strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1).strip()
    if not text.startswith("{"):
        start, end = text.find("{"), text.rfind("}")
        text = text[start : end + 1] if 0 <= start < end else text
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidAnswer(f"not JSON ({error.msg} at char {error.pos}): {text[:120]!r}") from None
    if isinstance(data, list):
        data = {"lesions": data}
    try:
        return LLMAnswer.model_validate(data)
    except ValidationError as error:
        raise InvalidAnswer(f"does not follow the schema: {error.errors()[0]['msg']} at "
                            f"{'.'.join(str(p) for p in error.errors()[0]['loc'])}") from None


class LLMExtractor:
    """Extracts ``CaseFindings`` with an OpenAI-compatible server; counts the HTTP requests it makes."""

    def __init__(self, options: LLMOptions, cache: AnswerCache | None = None) -> None:
        self.options = options
        self.cache = cache
        self.requests_made = 0
        self.warnings: list[str] = []  # one-line notes, e.g. a cached answer that had to be asked again
        self._format = options.response_format
        self._client = openai.AsyncOpenAI(
            base_url=options.base_url,
            api_key=os.environ.get(options.api_key_env) or "not-needed",
            timeout=options.timeout_s,
            max_retries=0,
        )

    def _findings(self, case_id: str, answer: LLMAnswer | None = None, error: str | None = None) -> CaseFindings:
        return CaseFindings(
            case_id=case_id,
            lesions=answer.lesions if answer else [],
            backend=BACKEND,
            model=self.options.model,
            prompt_version=PROMPT_VERSION,
            error=error,
        )

    async def extract(self, case_id: str, text: str) -> CaseFindings:
        """Findings of one report; failures come back as ``CaseFindings.error`` (never raised)."""
        report = text[: self.options.max_report_chars]
        key = cache_key(report, self.options.model, PROMPT_VERSION)
        if self.cache is not None and (cached := self.cache.get(key)) is not None:
            try:
                return self._findings(case_id, LLMAnswer.model_validate(cached))
            except ValidationError as error:
                first = error.errors()[0]
                self.warnings.append(
                    f"{case_id}: the cached answer in {self.cache.path.name} does not follow the current schema "
                    f"({first['msg']} at {'.'.join(str(p) for p in first['loc'])}); asked the model again"
                )
        messages = build_messages(report)
        try:
            content = await self._complete(messages)
            try:
                answer = parse_answer(content)
            except InvalidAnswer as error:
                repair = [*messages, {"role": "assistant", "content": content or ""}, repair_message(str(error))]
                answer = parse_answer(await self._complete(repair))
        except InvalidAnswer as error:
            return self._findings(case_id, error=f"LLM answer invalid after one repair request: {error}")
        except openai.APITimeoutError:
            return self._findings(case_id, error=(
                f"LLM request to {self.options.base_url} timed out after {self.options.timeout_s:g} s "
                f"(APITimeoutError, {self.options.max_retries} retries); raise --timeout or lower --concurrency"))
        except openai.APIConnectionError as error:
            return self._findings(case_id, error=(
                f"cannot connect to the LLM server at {self.options.base_url} ({type(error).__name__}: {error}); "
                "start the server or fix --base-url"))
        except openai.OpenAIError as error:
            return self._findings(case_id, error=f"LLM request failed: {type(error).__name__}: {error}")
        if self.cache is not None:
            self.cache.put(key, answer.model_dump(mode="json"))
        return self._findings(case_id, answer)

    async def _complete(self, messages: list[dict[str, str]]) -> str | None:
        """One chat completion with retries/backoff; degrades the response format on a 400 about it."""
        attempt = 0
        while True:
            try:
                self.requests_made += 1
                response = await self._client.chat.completions.create(
                    model=self.options.model,
                    messages=messages,
                    temperature=0,
                    max_tokens=self.options.max_tokens,
                    **self._format_kwargs(),
                )
                return response.choices[0].message.content if response.choices else None
            except openai.BadRequestError as error:
                if self._format == "none" or not re.search(r"response_format|json|schema|guided", str(error), re.I):
                    raise
                self._format = _RESPONSE_FORMATS[_RESPONSE_FORMATS.index(self._format) + 1]
            except _RETRYABLE:
                attempt += 1
                if attempt > self.options.max_retries:
                    raise
                await asyncio.sleep(self.options.backoff_s * 2 ** (attempt - 1))

    def _format_kwargs(self) -> dict:
        if self._format == "json_schema":
            schema = {"name": "report_lesions", "schema": answer_json_schema(), "strict": False}
            return {"response_format": {"type": "json_schema", "json_schema": schema}}
        if self._format == "json_object":
            return {"response_format": {"type": "json_object"}}
        return {}

    async def extract_many(
        self, reports: Iterable[tuple[str, str]], on_done: Callable[[CaseFindings], None]
    ) -> list[CaseFindings]:
        """Extracts ``(case_id, text)`` pairs with at most ``concurrency`` requests in flight.

        ``on_done`` is called with each result as soon as it is ready (used to append to findings.jsonl).
        """
        semaphore = asyncio.Semaphore(max(1, self.options.concurrency))

        async def one(case_id: str, text: str) -> CaseFindings:
            async with semaphore:
                findings = await self.extract(case_id, text)
            on_done(findings)
            return findings

        try:
            return list(await asyncio.gather(*(one(case_id, text) for case_id, text in reports)))
        finally:
            await self._client.close()
