"""`webinstruct curate` (dedup -> decontaminate -> dataset) and `webinstruct export`."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from tasks.semantic_decontam import JUDGE_FLOOR, THRESHOLD
from webinstruct.options import BaseUrlOption, ConcurrencyOption, ModelOption


def register(app: typer.Typer) -> None:
    from webinstruct.cli import console, prefect_ready, warehouse

    @app.command()
    def curate(
        fields: Annotated[str, typer.Option(help="Dedup on: question | question+answer")] = "question",
        shingle_size: Annotated[int, typer.Option(help="Word n-gram size of MinHash shingles")] = 3,
        num_perm: Annotated[int, typer.Option(help="MinHash permutations")] = 64,
        bands: Annotated[int, typer.Option(help="LSH bands (num_perm must be a multiple)")] = 32,
        threshold: Annotated[float, typer.Option(help="Estimated Jaccard for a near-duplicate")] = 0.6,
        per_model: Annotated[bool, typer.Option(help="Dedup each refiner model's pairs separately")] = False,
        benchmark: Annotated[Optional[list[str]], typer.Option(
            help="Benchmark to decontaminate against (repeatable): gsm8k, math, mmlu_stem, theoremqa, bbh, "
                 "or \\[name=]path:field[+field] for a JSONL/JSON/Parquet file [default: all bundled]")] = None,
        documents: Annotated[bool, typer.Option(
            "--documents/--no-documents", help="Also drop pairs of pages that contain benchmark text")] = False,
        stop_ngrams: Annotated[bool, typer.Option(
            "--stop-ngrams/--no-stop-ngrams", help="Ignore benchmark 10-grams common in general problem text")] = True,
        semantic: Annotated[bool, typer.Option(
            "--semantic/--no-semantic", help="Also catch rephrased benchmark items (sentence embeddings)")] = True,
        semantic_threshold: Annotated[float, typer.Option(help="Cosine at which a pair is a rephrased item")] = THRESHOLD,
        judge: Annotated[bool, typer.Option(
            "--judge/--no-judge", help="Let the LLM decide on pairs near a benchmark item (cosine >= --judge-floor)")] = False,
        judge_floor: Annotated[float, typer.Option(help="Lowest cosine sent to the judge")] = JUDGE_FLOOR,
        base_url: BaseUrlOption = None,
        model: ModelOption = None,
        concurrency: ConcurrencyOption = None,
        export_dir: Annotated[Optional[str], typer.Option(help="Also export the dataset to this folder")] = None,
        format: Annotated[str, typer.Option("--format", help="Export format: parquet | jsonl")] = "parquet",
    ) -> None:
        """Deduplicate and decontaminate refined pairs into `dataset` (only shards not done yet)."""
        from flows.settings import CurateSettings, ExportSettings  # no Prefect: bad settings fail fast
        from webinstruct import ui

        bundled = [b for b in benchmark or [] if ":" not in b]
        settings = CurateSettings(dedup_fields=fields, shingle_size=shingle_size, num_perm=num_perm, bands=bands,
                                  dedup_threshold=threshold, per_model=per_model, benchmarks=bundled or None,
                                  extra_benchmarks=[b for b in benchmark or [] if ":" in b],
                                  decontaminate_documents=documents, stop_ngrams=stop_ngrams,
                                  semantic_check=semantic, semantic_threshold=semantic_threshold,
                                  llm_judge=judge and semantic, judge_floor=judge_floor)
        export = ExportSettings(dir=export_dir, format=format)
        root = prefect_ready()
        from flows.curate import curate_flow

        if settings.llm_judge:
            from webinstruct.options import llm_session
            with llm_session(console, base_url, model, concurrency) as live:
                summary = curate_flow(data_dir=str(root), curate=settings, export=export, llm=live)
        else:
            with ui.progress_bars(console):
                summary = curate_flow(data_dir=str(root), curate=settings, export=export)
        console.print(
            f"[green]curate[/] {summary.get('pairs', 0)} new pair(s): "
            f"{summary.get('duplicates_dropped', 0)} duplicate(s) "
            f"dropped, {summary.get('contaminated_pairs', 0)} contaminated pair(s) "
            f"({summary.get('rephrased_pairs', 0)} rephrased), "
            f"{summary.get('contaminated_documents', 0)} contaminated page(s)")
        _print_funnel(summary["funnel"])
        if "export" in summary:
            e = summary["export"]
            console.print(f"[green]exported[/] {e['rows']} rows to {e['out_dir']} ({e['format']})")

    @app.command()
    def export(out: Annotated[str, typer.Argument(help="Output folder (a Hugging Face datasets directory)")],
               format: Annotated[str, typer.Option("--format", "-f", help="parquet | jsonl")] = "parquet") -> None:
        """Write the current `dataset` with a dataset card (README.md) to OUT."""
        from tasks.export import export_dataset, funnel
        from webinstruct.options import UserError

        if format not in ("parquet", "jsonl"):
            raise UserError(f"unknown format {format!r}", "use --format parquet or jsonl")
        wh = warehouse()
        e = export_dataset(wh, out, format)
        _print_funnel(funnel(wh).to_dicts())
        console.print(f"[green]exported[/] {e['rows']} rows in {e['files']} file(s) to {e['out_dir']}")

    def _print_funnel(rows: list[dict]) -> None:
        import polars as pl

        from webinstruct import ui

        ui.print_frame(Console(), pl.DataFrame(rows), title="funnel")
