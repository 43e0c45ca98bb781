"""On-disk cache of LLM answers keyed by (sha256 of the report text, model, prompt version).

An append-only JSONL file: one ``{"key": ..., "answer": {...}}`` line per answered report, flushed as it is
written, so a crash loses at most the line being written. Such a torn last line is cut off when the cache
is opened (``repair_torn_tail``, noted in ``AnswerCache.notes``), so the next answer is not glued to it.

Example:
    >>> cache = AnswerCache("out/llm_cache.jsonl")
    >>> key = cache_key(text, "qwen2.5-7b", PROMPT_VERSION)
    >>> cache.get(key) or cache.put(key, answer)
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any


def text_sha256(text: str) -> str:
    """Hex sha256 of the UTF-8 report text."""
    return hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()


def repair_torn_tail(path: str | os.PathLike[str]) -> str | None:
    """Cuts a JSONL file back to its last complete line (one ending in a newline), so that the next
    appended line does not merge with a line torn by a crash. Returns a one-line warning, or ``None`` when
    the file is absent or already ends with a newline.
    """
    path = Path(path)
    if not path.is_file():
        return None
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return None
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return None
        keep, chunk = 0, 1 << 16
        end = size
        while end > 0:
            start = max(0, end - chunk)
            handle.seek(start)
            newline = handle.read(end - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        handle.truncate(keep)
    return (f"{path.name}: cut off a torn last line ({size - keep} bytes) left by an interrupted run; "
            "that entry is redone")


def cache_key(text: str, model: str, prompt_version: str) -> str:
    """Cache key of one (report, model, prompt) triple."""
    return f"{text_sha256(text)}|{model}|{prompt_version}"


class AnswerCache:
    """Validated LLM answers on disk; ``get``/``put`` are safe to call from one event loop or threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._answers: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []  # one-line warnings about the file (a repaired torn line)
        if torn := repair_torn_tail(self.path):
            self.notes.append(torn)
        if self.path.is_file():
            with self.path.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                        self._answers[record["key"]] = record["answer"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached answer of ``key``, or ``None``."""
        return self._answers.get(key)

    def put(self, key: str, answer: dict[str, Any]) -> None:
        """Stores ``answer`` and appends it to the file immediately."""
        with self._lock:
            self._answers[key] = answer
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": key, "answer": answer}) + "\n")
                handle.flush()
