"""The trade-off plots (PNG): adversarial robustness against backdoor success rate, each standard
cell joined to its adversarially trained twin."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from tradeoff.report.collect import TableReport
from tradeoff.report.paper import split_setting


def plot_tradeoff(t: TableReport, path: Path) -> Optional[Path]:
    """Adversarial robustness against backdoor success rate, one panel per dataset; an arrow from
    each standard cell to its adversarially trained twin (ours solid, the paper's dashed)."""
    def complete(source: dict) -> bool:
        return len(source) == 2 and all(rob is not None for _, rob in source.values())

    drawable = [p for p in t.pairs if complete(p.ours) or complete(p.paper)]
    if not drawable:
        return None
    import matplotlib  # heavy and optional until a table has something to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(p.dataset for p in drawable))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, ds in zip(axes[0], datasets):
        for i, p in enumerate(q for q in drawable if q.dataset == ds):
            color = colors[i % len(colors)]
            label = ", ".join(v for _, v in split_setting(p.adversarial))
            for source, style, marker in ((p.ours, "-", "o"), (p.paper, "--", "s")):
                if not complete(source):
                    continue
                (xs, ys), (xa, ya) = source["standard"], source["adversarial"]
                filled = color if source is p.ours else "none"
                ax.scatter([xs], [ys], marker=marker, facecolors=filled, edgecolors=color)
                ax.scatter([xa], [ya], marker=marker, facecolors=filled, edgecolors=color,
                           label=f"{label} ({'ours' if source is p.ours else 'paper'})")
                ax.annotate("", xy=(xa, ya), xytext=(xs, ys),
                            arrowprops={"arrowstyle": "->", "color": color, "linestyle": style})
        ax.set_title(ds)
        ax.set_xlabel("backdoor success rate (%)")
        ax.set_ylabel("adversarial robustness (%)")
        ax.set_xlim(-3, 103)
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{t.paper_table}: standard → adversarially trained (preset {t.preset})"
                 + ("\nSYNTHETIC DATA: not results" if t.synthetic else ""), color="#b00" if t.synthetic else None)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
