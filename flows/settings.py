"""The settings each flow takes, as pydantic models: they render as forms in the Prefect UI.

Every field has a description (the form's help text); choices are `Literal`s (drop-downs).
No secret is ever a field: see `LLMSettings.api_key_env` / `api_key_secret`.
Kept free of `from __future__ import annotations`: Prefect validates a deployment's parameters
in a fresh process from the pickled flow, where postponed annotations cannot be resolved.
"""
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.benchmarks import BUILTIN
from tasks.semantic_decontam import JUDGE_FLOOR, THRESHOLD
from tasks.ingest import CC_BASE_URL

BenchmarkName = Literal[tuple(sorted(BUILTIN))]  # type: ignore[valid-type]


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CrawlSource(_Form):
    paths: list[str] = Field(default_factory=list, description=(
        "WARC/WET files, folders, globs, fsspec URLs (s3://...) or Common Crawl warc.paths(.gz) listings; "
        "files already ingested are skipped"))
    listing_base: str = Field(CC_BASE_URL, description="Where the relative paths of a warc.paths listing live")
    shard_size: int = Field(2000, ge=1, description="Documents per shard (does not change the version)")
    workers: Optional[int] = Field(None, ge=1, description="Processes to spread files over (default: all cores for big inputs)")


class RecallSettings(_Form):
    threshold: Optional[float] = Field(None, ge=0, le=1, description=(
        "Score at or above which a page is recalled; empty = the best-F1 threshold on the labelled pages "
        "(data/eval). A new threshold is a new version without retraining"))
    languages: Optional[list[str]] = Field(["en"], description=(
        "Recall only pages in these languages (ISO 639-1, the seeds' language); empty = every language"))
    retrain: Literal["if_missing", "never", "always"] = Field("if_missing", description=(
        "if_missing: train once, then keep that model for new crawl data; always: train a new model "
        "on the documents there are now (a new version, backfilled over every segment); never: refuse to train"))
    rounds: int = Field(2, ge=1, le=2, description=(
        "1: seeds only; 2: retrain on the pages round 1 recalled and the LLM-labelled domains (paper)"))
    seeds: Optional[list[str]] = Field(None, description="Seed files (JSONL/JSON/Parquet/text); empty = bundled GSM8K, AQuA-RAT, SVAMP")
    dim: int = Field(256, ge=2, description="fastText vector size (paper: 256)")
    epoch: int = Field(5, ge=1, description="fastText epochs (paper: 3, for millions of pages; 5 ranks better on small crawls)")
    lr: float = Field(1.0, gt=0, description="fastText learning rate")
    word_ngrams: int = Field(2, ge=1, description="fastText word n-grams")
    min_count: int = Field(1, ge=1, description="Minimum word count in the training text")
    neg_sample: Optional[int] = Field(None, ge=1, description=(
        "Negatives to sample (empty: as many as positives available, at most every page in scope)"))
    pos_neg_ratio: float = Field(1.0, gt=0, description="Positives per negative")
    pu_drop_score: Optional[float] = Field(0.5, ge=0, le=1, description=(
        "Leave out negatives that models trained without them score at least this (likely positives); empty: keep all"))
    threads: int = Field(1, ge=1, le=256, description=(
        "fastText training threads. 1 trains the same model every time (a run killed mid-training and rerun "
        "publishes what an uninterrupted run would); more is faster on big crawls but not bit-reproducible"))


class DomainSettings(_Form):
    enabled: bool = Field(True, description=(
        "Have the LLM label domains between the rounds; off: round 2 learns from round 1's recalled pages only"))
    min_domain_docs: int = Field(1, ge=1, description=(
        "Recalled pages a domain needs before the LLM labels it (paper: 1000 at crawl scale)"))
    max_llm_domains: Optional[int] = Field(None, ge=0, description=(
        "Label at most this many new domains per run (most recalled first); the rest wait for the next run"))
    overrides: Optional[str] = Field(None, description="CSV/JSON file of domain,label that wins over the LLM")


class ExtractSettings(_Form):
    prompt: str = Field("extract", description="Prompt: a file name under prompts/ (extract) or a path to your own .md")
    max_docs: Optional[int] = Field(None, ge=0, description=(
        "Pages to extract this run, highest recall score first; the rest stay pending for the next run"))
    chunk_chars: int = Field(4000, ge=200, description="Characters per chunk of a cleaned page")
    overlap_chars: int = Field(300, ge=0, description="Characters two consecutive chunks share")
    max_chunks: int = Field(6, ge=1, description=(
        "Chunks sent per page at most: those with the most question-and-answer signs, in page order"))
    min_grounding: float = Field(0.5, ge=0, le=1, description=(
        "Share of the question's words, and of the answer's, that must be on the page"))
    require_question: bool = Field(True, description=(
        "Send only pages with a question sign (question mark, exercise or problem marker) in the title or text"))
    recall_version: Optional[str] = Field(None, description="A recall_scores version (or model fingerprint); empty = the newest round")

    @model_validator(mode="after")
    def _overlap_fits(self):
        if self.overlap_chars * 2 > self.chunk_chars:
            raise ValueError(f"overlap_chars ({self.overlap_chars}) must be at most half of chunk_chars ({self.chunk_chars})")
        return self


class RefineSettings(_Form):
    prompt: str = Field("refine", description="Prompt: a file name under prompts/ (refine) or a path to your own .md")
    max_input_chars: int = Field(6000, ge=200, description="A longer pair is cut (question first) to fit the context")
    extract_version: Optional[str] = Field(None, description="A qa_extracted version to refine; empty = the current one")


class CurateSettings(_Form):
    dedup_fields: Literal["question", "question+answer"] = Field("question", description="Text compared for duplicates")
    shingle_size: int = Field(3, ge=1, description="Word n-gram size of the MinHash shingles")
    num_perm: int = Field(64, ge=8, description="MinHash permutations (a multiple of bands)")
    bands: int = Field(32, ge=1, description="LSH bands")
    dedup_threshold: float = Field(0.6, ge=0, le=1, description="Estimated Jaccard at which two pairs are duplicates")
    per_model: bool = Field(False, description="Deduplicate each refiner's version on its own (keeps two-model diversity)")
    benchmarks: Optional[list[BenchmarkName]] = Field(None, description="Bundled benchmarks to decontaminate against; empty = all")
    extra_benchmarks: list[str] = Field(default_factory=list, description="Your own benchmark files as [name=]path:field")
    decontaminate_documents: bool = Field(False, description="Also drop every pair of a page that contains benchmark text")
    stop_ngrams: bool = Field(True, description=(
        "Ignore benchmark 10-grams that also occur in general problem text (the bundled seed sets): stock phrases"))
    semantic_check: bool = Field(True, description=(
        "Also catch benchmark items restated in other words (sentence embeddings, all-MiniLM-L6-v2 on CPU)"))
    semantic_threshold: float = Field(THRESHOLD, ge=0, le=1, description=(
        "Cosine to the nearest benchmark item at which a pair is contaminated (calibrated: webinstruct eval-decontam)"))
    llm_judge: bool = Field(False, description=(
        "Send pairs near a benchmark item (cosine >= judge_floor) to the LLM, whose verdict decides"))
    judge_floor: float = Field(JUDGE_FLOOR, ge=0, le=1, description="Lowest cosine a pair needs to be sent to the judge")
    unrefined_pairs: Literal["keep", "drop"] = Field("keep", description=(
        "Pairs whose refinement failed verification: keep the extracted pair (marked refined=false) or leave them out"))
    min_answer_agreement: Optional[float] = Field(1.0, ge=0, le=1, description=(
        "With two or more refiners: leave out pairs whose refiners' final answers agree less than this (empty: keep all)"))

    def semantic_params(self, judge_model: str = ""):
        from tasks.semantic_decontam import SemanticParams
        if not self.semantic_check:
            return None
        return SemanticParams(threshold=self.semantic_threshold, judge=self.llm_judge, judge_floor=self.judge_floor,
                              judge_model=judge_model if self.llm_judge else "")

    def benchmark_specs(self) -> Optional[list[str]]:
        if not self.benchmarks and not self.extra_benchmarks:
            return None
        return [*(self.benchmarks or sorted(BUILTIN)), *self.extra_benchmarks]


class ExportSettings(_Form):
    dir: Optional[str] = Field(None, description="Folder to write the dataset to (Hugging Face layout + card); empty = no export")
    format: Literal["parquet", "jsonl"] = Field("parquet", description="File format of the exported dataset")
