"""Generation for the LaMP harness: a prompt -> text function, run over many prompts at once.

`openai_generator` sends each prompt as one user message to the configured OpenAI-compatible
server (the local llama.cpp server when no base_url is set); `generate_all` runs a small pool
of concurrent requests with a progress bar. Any `Callable[[str], str]` works as a generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm.auto import tqdm

from vars_langgraph.config import LLMConfig, VARSConfig

Generator = Callable[[str], str]


def openai_generator(
    cfg: VARSConfig,
    llm: LLMConfig | None = None,
    max_tokens: int = 64,
    temperature: float = 0.0,
) -> Generator:
    """A generator over chat completions (greedy by default, as the official evaluation)."""
    from vars_langgraph.models.llm import openai_client, resolve_llm

    resolved = resolve_llm(llm or cfg.llm, cfg)
    client = openai_client(resolved)

    def generate(prompt: str) -> str:
        resp = client.chat.completions.create(
            model=resolved.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=temperature,
        )
        return (resp.choices[0].message.content or "").strip()

    return generate


def generate_all(
    prompts: Sequence[str],
    generator: Generator,
    workers: int = 4,
    desc: str = "generate",
    progress: bool = True,
) -> list[str]:
    """Outputs for all prompts, in order; `workers` concurrent requests (1: sequential)."""
    bar = tqdm(total=len(prompts), desc=desc, disable=not progress, leave=False)
    try:
        if workers <= 1:
            out = []
            for p in prompts:
                out.append(generator(p))
                bar.update()
            return out
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(generator, p) for p in prompts]
            for f in futures:
                f.add_done_callback(lambda _: bar.update())
            return [f.result() for f in futures]
    finally:
        bar.close()
