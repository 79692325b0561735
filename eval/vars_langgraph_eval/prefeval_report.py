"""Markdown table and PNG of a PrefEval run (results.json of `eval prefeval`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

STYLE = {"none": ("0.5", ":"), "all": ("tab:purple", "--"), "rag": ("tab:red", "-"),
         "vars": ("tab:blue", "-"), "lgstore": ("tab:green", "-."), "dense3": ("k", ":")}


def _f(v: Any, nd: int = 2) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def _p(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def markdown(results: dict[str, Any], png: Path | None = None) -> str:
    s = results["settings"]
    ext = results.get("extraction") or {}
    lines = [
        f"# PrefEval: {s['users']} users x {s['prefs_per_user']} preferences, topics "
        f"{', '.join(results['topics'])} ({s['topic_split'] if not s['topics'] else 'given'}), "
        f"extractor {s['extractor']}, seed {s['seed']}",
        "",
        "card in prompt: a card learned from the preference's own turns (or, for lgstore, the raw "
        "message) was in the question's prompt; in prompt: that, or the statement survived "
        "history trimming. dense3 is a reference (top-k over the raw statements only, no graph).",
        "",
        "| form | N | method | card in prompt | in prompt | coverage | notes | memory tokens "
        "| prompt tokens | new cards / distractor turn | turn p50 ms | turn p95 ms | follows |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        m = r["summary"]
        t = m.get("turn_ms") or {}
        j = m.get("judge") or {}
        lines.append(
            f"| {r['form']} | {'–' if r['inter_turns'] is None else r['inter_turns']} | "
            f"{r['method']} | {_p(m['card_in_prompt'])} | {_p(m['in_prompt'])} | "
            f"{_p(m['coverage'])} | {_f(m['notes'], 1)} | {_f(m['memory_tokens'], 0)} | "
            f"{_f(m['prompt_tokens'], 0)} | {_f(m['new_cards_per_distractor_turn'], 3)} | "
            f"{_f(t.get('p50'), 0)} | {_f(t.get('p95'), 0)} | {_p(j.get('follows'))} |")
    if ext:
        lines += ["", f"Extraction ({ext['extractor']}): {ext['calls']} distinct windows "
                  f"extracted ({ext['cache_hits']} repeats served from cache), "
                  f"p50 {_f(ext['seconds_p50'], 2)} s, p95 {_f(ext['seconds_p95'], 2)} s."]
    mach = results.get("machine") or {}
    lines += ["", f"Machine: {mach.get('cpus')} CPUs, load average at end {mach.get('loadavg_at_end')}."]
    if png:
        lines += ["", f"Plot: {png.name}"]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> Path | None:
    """In-prompt rate (card in prompt) against N, one panel per form."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    forms = list(dict.fromkeys(r["form"] for r in results["runs"]))
    fig, axes = plt.subplots(1, len(forms), figsize=(5 * len(forms), 3.6), squeeze=False)
    for ax, form in zip(axes[0], forms, strict=True):
        runs = [r for r in results["runs"] if r["form"] == form]
        ns = sorted({r["inter_turns"] for r in runs if r["inter_turns"] is not None})
        for method in dict.fromkeys(r["method"] for r in runs):
            color, ls = STYLE.get(method, (None, "-"))
            if method == "dense3":
                v = next(r["summary"]["card_in_prompt"] for r in runs if r["method"] == method)
                ax.plot(ns, [v] * len(ns), color=color, ls=ls, label="dense3 (reference)")
                continue
            pts = [(r["inter_turns"], r["summary"]["in_prompt" if method == "none"
                                                  else "card_in_prompt"])
                   for r in runs if r["method"] == method]
            pts.sort()
            ax.plot([x for x, _ in pts],
                    [y for _, y in pts], marker="o", color=color, ls=ls,
                    label=method + (" (history)" if method == "none" else ""))
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("distractor turns N")
        ax.set_ylabel("preference in prompt")
        ax.set_title(form)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
