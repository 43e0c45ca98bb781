"""`rsuper extract` and `rsuper extract-score`: tumor facts from report text, and their accuracy."""

from __future__ import annotations

import math
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from rsuper.paths import exit_if_output_overlaps

console = Console()


def _score_table(result, title: str) -> Table:
    table = Table(title=title)
    for column in ("organ", "sens", "spec", "F1", "count acc", "diam ±2mm", "location acc", "cases w/ lesion"):
        table.add_column(column, justify="right" if column != "organ" else "left")

    def fmt(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.3f}"

    for organ, s in [*result.organs.items(), ("ALL (pooled)", result.overall)]:
        table.add_row(organ, fmt(s.sensitivity), fmt(s.specificity), fmt(s.presence_f1), fmt(s.count_accuracy),
                      fmt(s.diameter_accuracy), fmt(s.location_accuracy), str(s.tp + s.fn))
    return table


def _ids(ids: list[str], limit: int = 10) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _print_failures(failures: dict[str, str], out: Path, limit: int = 10) -> None:
    """One line per distinct error (the cases it hit listed briefly), at most ``limit`` lines."""
    by_error: dict[str, list[str]] = {}
    for case_id, error in failures.items():
        by_error.setdefault(error, []).append(case_id)
    for error, ids in list(by_error.items())[:limit]:
        console.print(f"[red]failed:[/] {_ids(ids)}: {error}", highlight=False)
    if len(by_error) > limit:
        console.print(f"[red]... {len(by_error) - limit} more errors; each is in {out}/findings.jsonl ('error')[/]")


def register(app: typer.Typer) -> None:
    """Adds the `extract` and `extract-score` commands to the rsuper app."""

    @app.command("extract")
    def extract(
        reports_csv: Path = typer.Argument(
            ..., metavar="REPORTS_CSV",
            help="CSV with 'BDMAP ID' (or 'Encrypted Accession Number'/'id') and 'Report' (or 'Findings'/'report') "
                 "columns.",
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", metavar="OUT", help="Output folder: tumors.csv, cases.csv, findings.jsonl."
        ),
        backend: str = typer.Option(
            "rules", "--backend", metavar="rules|llm", help="rules (offline, deterministic) or llm."
        ),
        base_url: str = typer.Option(
            None, "--base-url", metavar="URL", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1."
        ),
        model: str = typer.Option(None, "--model", metavar="MODEL", help="Model name served at --base-url."),
        api_key_env: str = typer.Option(
            "OPENAI_API_KEY", "--api-key-env", metavar="VAR", help="Environment variable holding the API key."
        ),
        concurrency: int = typer.Option(8, "--concurrency", min=1, metavar="N", help="Concurrent LLM requests."),
        timeout_s: float = typer.Option(120.0, "--timeout", metavar="SECONDS", help="Seconds per LLM request."),
        max_retries: int = typer.Option(
            4, "--max-retries", min=0, metavar="N", help="Retries per request (exponential backoff)."
        ),
        max_tokens: int = typer.Option(2048, "--max-tokens", min=64, metavar="N", help="Cap on answer tokens."),
        cache: Path = typer.Option(
            None, "--cache", metavar="FILE", show_default="OUT/llm_cache.jsonl", help="LLM answer cache."
        ),
        compare: Path = typer.Option(
            None, "--compare", metavar="DIR", help="Another extraction folder to compare with."
        ),
    ) -> None:
        """Extract lesions (organ, location, size, count) from radiology reports into R-Super tables.

        Reruns resume: a case already in OUT/findings.jsonl is reused when its report text, backend, model and
        prompt version are unchanged. Bad rows (empty report, duplicate id) are reported and skipped. Exits
        with code 1 when the extraction of any report failed (e.g. the LLM server is unreachable).

        Example: rsuper extract reports.csv --out extract_rules

        Example: rsuper extract reports.csv --out extract_llm --backend llm --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-7B-Instruct --concurrency 16 --compare extract_rules
        """
        from rsuper.reports.llm import LLMOptions
        from rsuper.reports.pipeline import read_reports, run_extraction

        exit_if_output_overlaps(out, {"REPORTS_CSV": reports_csv, "--compare": compare})
        exit_if_output_overlaps(cache, {"REPORTS_CSV": reports_csv, "--compare": compare}, "--cache")

        if backend not in ("rules", "llm"):
            raise typer.BadParameter(f"unknown backend {backend!r}; use 'rules' or 'llm'", param_hint="--backend")
        options = None
        if backend == "llm":
            if not base_url or not model:
                raise typer.BadParameter("--backend llm needs --base-url and --model", param_hint="--base-url")
            if api_key_env not in os.environ:
                console.print(f"[yellow]note: ${api_key_env} is not set; sending a placeholder key[/]")
            options = LLMOptions(base_url=base_url, model=model, api_key_env=api_key_env, concurrency=concurrency,
                                 timeout_s=timeout_s, max_retries=max_retries, max_tokens=max_tokens)
        try:
            total = len(read_reports(reports_csv))
        except (FileNotFoundError, ValueError) as error:
            console.print(f"[red]error:[/] {error}")
            raise typer.Exit(2) from None
        columns = (TextColumn("extract ({task.fields[backend]})"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("extract", total=total, backend=backend)
            summary = run_extraction(reports_csv, out, backend=backend, llm_options=options, cache_path=cache,
                                     progress=lambda n: bar.advance(task, n))
        for message in summary.messages:
            console.print(f"[yellow]warning:[/] {message}", highlight=False)
        _print_failures(summary.failures, out)
        skipped = f"{summary.skipped} skipped (bad rows), " if summary.skipped else ""
        console.print(
            f"[green]{summary.done} extracted[/], {summary.reused} reused from an earlier run, {skipped}"
            f"[{'red' if summary.failed else 'green'}]{summary.failed} failed[/] -> {out}/tumors.csv, cases.csv, "
            "findings.jsonl"
        )
        if compare is not None:
            from rsuper.reports.scoring import score_dirs

            result = score_dirs(compare, out)
            console.print(_score_table(result, f"{out} scored against {compare}"))
            for line in result.disagreements[:100]:
                console.print(f"  {line}")
            if len(result.disagreements) > 100:
                console.print(f"  ... {len(result.disagreements) - 100} more disagreements")
        if summary.failed:
            console.print(f"[red]{summary.failed} of {total} reports failed ({_ids(list(summary.failures))}); they are "
                          "not in the tables. Fix the cause above and rerun: finished cases are kept.[/]")
            raise typer.Exit(1)

    @app.command("extract-score")
    def extract_score(
        gold_dir: Path = typer.Argument(..., metavar="GOLD", help="Folder (or tumors.csv) with the gold lesions."),
        pred_dir: Path = typer.Argument(
            ..., metavar="PRED", help="Folder (or tumors.csv) written by `rsuper extract`."
        ),
        tolerance_mm: float = typer.Option(
            2.0, "--tolerance-mm", metavar="MM", help="Largest-diameter agreement tolerance in mm."
        ),
        json_out: Path = typer.Option(None, "--json", metavar="FILE", help="Also write the scores as JSON to FILE."),
        show: int = typer.Option(20, "--show", metavar="N", help="How many disagreements to list."),
    ) -> None:
        """Score an extraction (PRED) against gold lesions (GOLD), per organ.

        Presence sensitivity/specificity/F1, count accuracy, largest diameter within --tolerance-mm, location
        accuracy (defined in docs/reports.md).

        Example: rsuper extract-score tests/fixtures/reports/gold extract_rules
        """
        from rsuper.atomic import write_json_atomic
        from rsuper.reports.scoring import score_dirs

        exit_if_output_overlaps(json_out, {"GOLD": gold_dir, "PRED": pred_dir}, "--json")

        try:
            result = score_dirs(gold_dir, pred_dir, tolerance_mm)
        except (FileNotFoundError, ValueError) as error:
            console.print(f"[red]error:[/] {error}")
            raise typer.Exit(2) from None
        console.print(_score_table(result, f"{pred_dir} vs gold {gold_dir}"))
        if result.missing:
            console.print(f"[yellow]{len(result.missing)} gold cases missing or failed in the prediction "
                          f"(scored as 'no lesion'): {', '.join(result.missing[:10])}[/]")
        for line in result.disagreements[:show]:
            console.print(f"  {line}")
        if json_out is not None:
            write_json_atomic(json_out, {
                "organs": {o: s.as_dict() for o, s in result.organs.items()},
                "overall": result.overall.as_dict(),
                "missing": result.missing,
                "disagreements": result.disagreements,
            })
