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
        "OpenAI-compatible endpoint(s) ending in /v1; several = data-parallel replicas of one model"))
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (0 = greedy; part of the version)")
    max_tokens: int = Field(768, ge=1, description="Longest reply in tokens (part of the version)")
    max_concurrency: int = Field(4, ge=1, description="Requests in flight, over all replicas")
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

    def api_key(self) -> str:
        """The key, resolved at call time; 'local' when none is set (local servers ignore it)."""
        if self.api_key_secret:
            from prefect.blocks.system import Secret

            return str(Secret.load(self.api_key_secret).get())
        return os.environ.get(self.api_key_env) or "local"
