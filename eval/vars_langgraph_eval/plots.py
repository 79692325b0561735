"""PNG plots of the benchmark's per-session curves (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PANELS = (
    ("enforcements", "enforcement turns / session"),
    ("user_words", "user words / session"),
    ("precision", "precision of injected preferences"),
    ("recall", "recall of applicable preferences"),
    ("reward", "mean reward"),
    ("z_long_norm", "|z_long|"),
    ("selection_changed", "turns where the injected notes differ from RAG's"),
    ("note_tokens", "note tokens in the prompt / turn"),
)
STYLE = {"none": ("0.5", ":"), "all": ("tab:purple", "--"), "rag": ("tab:red", "-"),
         "vars": ("tab:blue", "-"), "vars_long": ("tab:green", "-."),
         "vars_short": ("tab:orange", "-.")}


def _series(values: list[float | None]) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for i, v in enumerate(values):
        if v is not None:
            xs.append(i + 1)
            ys.append(v)
    return xs, ys


def _draw(ax: Any, results: dict[str, Any], key: str, title: str) -> None:
    for method, res in results.items():
        color, ls = STYLE.get(method, (None, "-"))
        xs, ys = _series(res["curves"].get(key, []))
        if xs:
            ax.plot(xs, ys, label=method, color=color, linestyle=ls, linewidth=1.6)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("session")
    ax.grid(alpha=0.3)


def plot_results(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """One PNG per curve plus `curves.png` with all panels. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for key, title in PANELS:
        fig, ax = plt.subplots(figsize=(6, 4))
        _draw(ax, results, key, title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        p = out / f"{key}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    fig, axes = plt.subplots(2, 4, figsize=(20, 8))
    for ax, (key, title) in zip(axes.flat, PANELS, strict=True):
        _draw(ax, results, key, title)
    if axes.flat[0].get_legend_handles_labels()[0]:
        axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    p = out / "curves.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(p)
    return paths
