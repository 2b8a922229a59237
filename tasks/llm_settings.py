"""Where an LLM is and how to talk to it: the settings every LLM stage takes (a form in the Prefect UI)."""
import os
from typing import Optional

import pydantic
from pydantic import Field

DEFAULT_BASE_URL = "http://127.0.0.1:8088/v1"
DEFAULT_MODEL = "Qwen2.5-Coder-1.5B-Instruct"  # embedded default, chosen by bench/llm_models.py


class LLMSettings(pydantic.BaseModel):
    """Where an LLM is and how to talk to it; a form in the Prefect UI.

    No secret is a field: parameters are stored in Prefect's database and the stage_runs manifest.
    The API key is read when a client is made, from the environment variable `api_key_env` or the
    Prefect Secret block `api_key_secret`.
    """

    model: str = Field(DEFAULT_MODEL, description="Model name as the server serves it (GET /v1/models)")
    base_urls: list[str] = Field([DEFAULT_BASE_URL], min_length=1, description=(
        "OpenAI-compatible endpoint(s) ending in /v1; several = data-parallel replicas of one model. Requests "
        "sharing a prompt prefix go out together and to the same replica while its load allows (prefix cache)"))
    base_url_weights: Optional[list[float]] = Field(None, description=(
        "Relative capacity of each base URL, in the same order (e.g. [2, 1]: the first replica has twice the "
        "GPUs): scales its in-flight limit and its share of requests. Empty = all equal"))
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (0 = greedy; part of the version)")
    max_tokens: int = Field(768, ge=1, description="Longest reply in tokens (part of the version)")
    max_concurrency: int = Field(4, ge=1, description=(
        "Requests in flight per base URL (times its weight): N replicas take N x this at once. Shared by all "
        "shards of one process; match the server's batch size (vLLM --max-num-seqs, llama.cpp slots)"))
    timeout_s: float = Field(120.0, gt=0, description="Seconds before one request is abandoned and retried")
    max_retries: int = Field(5, ge=0, description="Retries per request on 429, 5xx, timeouts and dropped connections")
    repair_retry: bool = Field(True, description="Ask once more when a reply is not valid JSON of the schema")
    backoff_base_s: float = Field(0.5, ge=0, description="First retry waits about this long; doubles each time")
    backoff_max_s: float = Field(30.0, ge=0, description="Longest wait between two retries")
    retry_after_max_s: float = Field(120.0, ge=0, description="Cap on a server's Retry-After header")
    use_cache: bool = Field(True, description="Serve identical requests from the response cache (reruns cost nothing)")
    server_down_after_s: float = Field(120.0, gt=0, description=(
        "No replica accepting connections for this long stops the stage; finished requests are kept"))
    api_key_env: str = Field("WEBINSTRUCT_LLM_API_KEY", description=(
        "Environment variable holding the API key (keys are never form fields or stored parameters)"))
    api_key_secret: Optional[str] = Field(None, description=(
        "Name of a Prefect Secret block holding the API key (wins over api_key_env)"))

    @pydantic.model_validator(mode="after")
    def _weights_match_urls(self) -> "LLMSettings":
        if self.base_url_weights == []:
            self.base_url_weights = None
        if self.base_url_weights is not None:
            if len(self.base_url_weights) != len(self.base_urls):
                raise ValueError(f"base_url_weights has {len(self.base_url_weights)} entries for "
                                 f"{len(self.base_urls)} base_urls")
            if any(w <= 0 for w in self.base_url_weights):
                raise ValueError("base_url_weights must be positive")
        return self

    def api_key(self) -> str:
        """The key, resolved at call time; 'local' when none is set (local servers ignore it)."""
        if self.api_key_secret:
            from prefect.blocks.system import Secret

            return str(Secret.load(self.api_key_secret).get())
        return os.environ.get(self.api_key_env) or "local"
