"""Sizing a crawl: GPU-hours, core-hours, wall time and pairs out, from the rates a warehouse
measured (webinstruct/plan_rates.py) and a GPU profile (webinstruct/gpu_profiles/*.toml).

Pure arithmetic: nothing here reads the warehouse. `webinstruct plan` prints the result.

The model, stage by stage (every rate is a measured average, or the user's `--rate`):
    documents   = WARC files x docs_per_warc                (or --documents)
    scored      = documents x recall_rounds                 recall scores every document each round
    recalled    = documents x recall_keep                   the last round's keep share
    LLM calls   = scored x domain_calls_per_doc | recalled x extract_calls_per_page
                  | pairs x refine_calls_per_pair
    tokens      = calls x (prompt, completion) tokens per call of that stage
    replica-s   = prompt tokens / prefill_tokens_per_s + completion tokens / generation_tokens_per_s
    GPU-hours   = replica-s x gpus_per_replica / 3600;  wall = replica-s / replicas
    core-hours  = items x core-seconds per item / 3600;  wall = core-hours / cores
    pairs out   = recalled x pairs_per_page x refined_per_pair x dedup_keep x dataset_keep
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webinstruct.options import UserError

PROFILES_DIR = Path(__file__).with_name("gpu_profiles")

# name -> (what it is, the command whose runs measure it)
RATES: dict[str, tuple[str, str]] = {
    "docs_per_warc": ("documents kept per WARC file", "webinstruct ingest"),
    "ingest_s_per_doc": ("ingest core-seconds per document", "webinstruct ingest"),
    "recall_rounds": ("recall rounds (each scores every document)", "webinstruct recall"),
    "recall_train_s": ("core-seconds per recall model training", "webinstruct recall"),
    "recall_score_s_per_doc": ("recall scoring core-seconds per document and round", "webinstruct recall"),
    "recall_keep": ("share of documents the last recall round keeps", "webinstruct recall"),
    "domain_calls_per_doc": ("domain-label requests per document and round (at most: domains recur)",
                             "webinstruct recall"),
    "domains_prompt_tokens": ("prompt tokens per domain-label request", "webinstruct recall"),
    "domains_completion_tokens": ("completion tokens per domain-label request", "webinstruct recall"),
    "extract_calls_per_page": ("extraction requests (page chunks) per recalled page", "webinstruct mine"),
    "extract_prompt_tokens": ("prompt tokens per extraction request", "webinstruct mine"),
    "extract_completion_tokens": ("completion tokens per extraction request", "webinstruct mine"),
    "pairs_per_page": ("extracted pairs (status ok) per recalled page", "webinstruct mine"),
    "refine_calls_per_pair": ("refinement requests per extracted pair (one per refiner)", "webinstruct mine"),
    "refine_prompt_tokens": ("prompt tokens per refinement request", "webinstruct mine"),
    "refine_completion_tokens": ("completion tokens per refinement request", "webinstruct mine"),
    "refined_per_pair": ("usable refined pairs (ok or unrefined) per extracted pair", "webinstruct mine"),
    "curate_s_per_pair": ("dedup + decontamination + dataset core-seconds per refined pair", "webinstruct curate"),
    "dedup_keep": ("share of refined pairs dedup keeps", "webinstruct curate"),
    "dataset_keep": ("share of deduplicated pairs that reach `dataset` (decontamination, refiner agreement)",
                     "webinstruct curate"),
}
FEW = 20  # a rate resting on fewer observations is flagged in the plan's notes
NOT_AVERAGES = ("recall_rounds", "recall_train_s")  # a count, and a fixed cost: few is normal
FULL_WARC_DOCS = 1000  # a real Common Crawl WARC file holds tens of thousands of pages


class GpuProfile(BaseModel):
    """What one replica of a model serves on its hardware, from `vllm bench serve` or the user."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    model: str = Field(min_length=1)
    device: str = Field(min_length=1, description="the hardware of one replica, e.g. 4x H100 80GB SXM")
    kind: Literal["gpu", "cpu"] = "gpu"  # cpu: a replica is a machine; "GPU-hours" are machine-hours
    gpus_per_replica: int = Field(ge=1, description="tensor-parallel size: GPUs one replica occupies")
    concurrency: int = Field(ge=1, description="requests in flight when the rates were measured")
    prefill_tokens_per_s: float = Field(gt=0, description="prompt tokens one replica processes per second")
    generation_tokens_per_s: float = Field(gt=0, description="completion tokens one replica generates per second")
    source: str = Field(min_length=1, description="where the numbers come from")

    def replica_seconds(self, prompt_tokens: float, completion_tokens: float) -> float:
        # Additive: prefill and decode counted one after the other. vLLM overlaps them (chunked
        # prefill), so this is the conservative end; the shared prompt prefix is prefill-cached too.
        return prompt_tokens / self.prefill_tokens_per_s + completion_tokens / self.generation_tokens_per_s


def shipped_profiles() -> list[str]:
    return sorted(p.name for p in PROFILES_DIR.glob("*.toml"))


def resolve_profile(spec: str) -> Path:
    """A path to a TOML file, or the bare name of a shipped profile (with or without .toml)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    name = spec if spec.endswith(".toml") else f"{spec}.toml"
    if "/" not in spec and (PROFILES_DIR / name).is_file():
        return PROFILES_DIR / name
    raise UserError(f"no GPU profile {spec}: not a file, and not a shipped profile",
                    f"shipped: {', '.join(shipped_profiles())}; or pass the path of your own TOML file")


def load_profile(spec: str) -> GpuProfile:
    path = resolve_profile(spec)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"GPU profile {path} is not valid TOML: {exc}", "fix the file (see the shipped profiles)")
    try:
        return GpuProfile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'profile'}: {e['msg'].lower()}" for e in exc.errors())
        fields = ", ".join(GpuProfile.model_fields)
        raise UserError(f"GPU profile {path}: {problems}", f"a profile has the fields {fields}") from None


# ---- rates ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rate:
    name: str
    value: float | None  # None: the warehouse has nothing to measure it on
    observations: int  # how many items the average rests on
    basis: str  # what the observations are: "WARC files", "calls", "pages", ...
    source: str  # the table and versions it was measured on, or "--rate"
    model: str | None = None  # token rates: the model whose replies were measured


def override(rates: dict[str, Rate], assignments: list[str]) -> dict[str, Rate]:
    """Apply `--rate name=value` assignments; an unknown name or a bad number is a user error."""
    out = dict(rates)
    for text in assignments:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or name not in RATES:
            raise UserError(f"--rate {text!r}: expected NAME=VALUE with NAME one of the plan's rates",
                            f"rates: {', '.join(RATES)}")
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"--rate {text!r}: {value!r} is not a number", "e.g. --rate pairs_per_page=0.3") from None
        if number < 0:
            raise UserError(f"--rate {text!r}: a rate cannot be negative", "e.g. --rate pairs_per_page=0.3")
        out[name] = Rate(name, number, 0, "", "--rate")
    return out


# ---- the plan -------------------------------------------------------------------------------------
@dataclass
class StagePlan:
    stage: str
    items: float
    unit: str
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    gpu_hours: float = 0.0  # LLM stages (machine-hours with a cpu profile)
    core_hours: float = 0.0  # CPU stages
    wall_hours: float = 0.0


@dataclass
class Plan:
    warc_files: float | None
    documents: float
    gpus: int
    cpu_cores: int
    replicas: int
    profile: GpuProfile
    stages: list[StagePlan]
    funnel: dict[str, float]  # documents -> ... -> dataset pairs
    rates: list[Rate]
    notes: list[str] = field(default_factory=list)

    @property
    def gpu_hours(self) -> float:
        return sum(s.gpu_hours for s in self.stages)

    @property
    def core_hours(self) -> float:
        return sum(s.core_hours for s in self.stages)

    @property
    def wall_hours(self) -> float:  # stages one after another
        return sum(s.wall_hours for s in self.stages)

    @property
    def pairs(self) -> float:
        return self.funnel["dataset"]

    def as_dict(self) -> dict:
        return {"inputs": {"warc_files": self.warc_files, "documents": self.documents, "gpus": self.gpus,
                           "replicas": self.replicas, "cpu_cores": self.cpu_cores},
                "profile": self.profile.model_dump(),
                "stages": [asdict(s) for s in self.stages],
                "totals": {"gpu_hours": self.gpu_hours, "core_hours": self.core_hours,
                           "wall_hours": self.wall_hours, "pairs": self.pairs},
                "funnel": self.funnel,
                "rates": [asdict(r) | {"meaning": RATES[r.name][0]} for r in self.rates],
                "notes": self.notes}


def needed(rates: dict[str, Rate], names: list[str]) -> dict[str, float]:
    """The values of `names`; any without a measurement is one error naming what to run."""
    missing = [n for n in RATES if n in names and (rates.get(n) is None or rates[n].value is None)]
    if missing:
        runs = list(dict.fromkeys(RATES[n][1] for n in missing))  # in pipeline order
        raise UserError(
            f"the warehouse has no measurement of {', '.join(missing)}",
            f"run {', then '.join(f'`{r}`' for r in runs)} on a sample of the crawl first (the plan scales "
            f"what it measured), or set them: --rate {missing[0]}=VALUE")
    return {n: float(rates[n].value) for n in names}  # type: ignore[arg-type]


def estimate(rates: dict[str, Rate], profile: GpuProfile, *, warc_files: float | None = None,
             documents: float | None = None, gpus: int, cpu_cores: int) -> Plan:
    if (warc_files is None) == (documents is None):
        raise UserError("give the crawl's size once: --warc-files N or --documents N", "see `webinstruct plan --help`")
    if gpus < profile.gpus_per_replica:
        raise UserError(f"--gpus {gpus} is fewer than the {profile.gpus_per_replica} GPUs one replica of "
                        f"{profile.model} occupies", f"pass --gpus {profile.gpus_per_replica} or more")
    if cpu_cores < 1:
        raise UserError("--cpu-cores must be at least 1", "see `webinstruct plan --help`")
    v = needed(rates, ["ingest_s_per_doc", "recall_rounds", "recall_train_s", "recall_score_s_per_doc",
                       "recall_keep", "domain_calls_per_doc", "extract_calls_per_page", "pairs_per_page",
                       "refine_calls_per_pair", "refined_per_pair", "curate_s_per_pair", "dedup_keep",
                       "dataset_keep"] + (["docs_per_warc"] if documents is None else []))
    # token rates are needed only for a stage that makes calls
    for stage, calls in (("domains", v["domain_calls_per_doc"]), ("extract", v["extract_calls_per_page"]),
                         ("refine", v["refine_calls_per_pair"])):
        v |= needed(rates, [f"{stage}_prompt_tokens", f"{stage}_completion_tokens"]) if calls else \
            {f"{stage}_prompt_tokens": 0.0, f"{stage}_completion_tokens": 0.0}

    docs = documents if documents is not None else warc_files * v["docs_per_warc"]  # type: ignore[operator]
    scored = docs * v["recall_rounds"]
    recalled = docs * v["recall_keep"]
    pairs = recalled * v["pairs_per_page"]
    refined = pairs * v["refined_per_pair"]
    deduped = refined * v["dedup_keep"]
    replicas = gpus // profile.gpus_per_replica

    def cpu(stage: str, items: float, unit: str, core_s: float, serial_s: float = 0.0) -> StagePlan:
        # serial_s: work on one core whatever the cores (a recall model trains in one process)
        return StagePlan(stage, items, unit, core_hours=(core_s + serial_s) / 3600,
                         wall_hours=(core_s / cpu_cores + serial_s) / 3600)

    def llm(stage: str, calls: float) -> StagePlan:
        p, c = calls * v[f"{stage}_prompt_tokens"], calls * v[f"{stage}_completion_tokens"]
        replica_s = profile.replica_seconds(p, c)
        return StagePlan(stage, calls, "requests", p, c, gpu_hours=replica_s * profile.gpus_per_replica / 3600,
                         wall_hours=replica_s / replicas / 3600)

    stages = [
        cpu("ingest", docs, "documents", docs * v["ingest_s_per_doc"]),
        cpu("recall", scored, "document scores", scored * v["recall_score_s_per_doc"],
            serial_s=v["recall_rounds"] * v["recall_train_s"]),
        llm("domains", scored * v["domain_calls_per_doc"]),
        llm("extract", recalled * v["extract_calls_per_page"]),
        llm("refine", pairs * v["refine_calls_per_pair"]),
        cpu("curate", refined, "refined pairs", refined * v["curate_s_per_pair"]),
    ]
    funnel = {"documents": docs, "recalled": recalled, "extracted": pairs, "refined": refined,
              "deduped": deduped, "dataset": deduped * v["dataset_keep"]}
    used = [rates[n] for n in RATES if n in v]
    return Plan(warc_files, docs, gpus, cpu_cores, replicas, profile, stages, funnel, used,
                notes(used, profile, documents is None))


def notes(used: list[Rate], profile: GpuProfile, by_warc: bool) -> list[str]:
    """What the reader should know before trusting the numbers."""
    out = []
    few = [f"{r.name} ({r.observations} {r.basis})" for r in used
           if r.source != "--rate" and r.observations < FEW and r.name not in NOT_AVERAGES]
    if few:
        out.append(f"rests on fewer than {FEW} observations: {', '.join(few)}; measure a larger sample "
                   "or set them with --rate")
    per_warc = next((r for r in used if r.name == "docs_per_warc"), None)
    if by_warc and per_warc and per_warc.source != "--rate" and (per_warc.value or 0) < FULL_WARC_DOCS:
        out.append(f"the warehouse's WARC files hold {per_warc.value:,.1f} documents each (excerpts?); a full "
                   "Common Crawl WARC file holds tens of thousands: pass --rate docs_per_warc=N or --documents N")
    models = sorted({r.model for r in used if r.model and r.source != "--rate"} - {profile.model})
    if models:
        out.append(f"tokens per request were measured with {', '.join(models)}; the profile serves "
                   f"{profile.model}: its replies may be longer or shorter")
    return out
