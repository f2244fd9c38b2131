"""The report's figures (PNG): the trade-off plot (adversarial robustness against backdoor success
rate, each standard cell joined to its adversarially trained twin), the learning curves of each
such pair, the phase diagram (a heatmap of a metric's paired difference over two setting keys) and
the saliency figure (each pair's input gradients on the same triggered test images)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from safetensors.torch import load_file

from tradeoff.core.stats import PERCENT_RANGE
from tradeoff.evaluation.saliency import FILE_NAME as SALIENCY_FILE
from tradeoff.records import folders
from tradeoff.records.record import ACCURACY, BACKDOOR_SUCCESS, ROBUSTNESS
from tradeoff.report.collect import TableReport
from tradeoff.report.layout import CLIP_MARK, curve_band, fmt_interval, heatmap_grid
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
            label = ", ".join(v for _, v in split_setting(p.adversarial)) + (f" ({p.cell})" if p.cell else "")
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
    return _save(fig, path, f"{t.paper_table}: standard → adversarially trained (preset {t.preset})", t.synthetic)


CURVE_PANELS = {ACCURACY: "clean accuracy (%)", ROBUSTNESS: "adversarial robustness (%)",
                BACKDOOR_SUCCESS: "backdoor success rate (%)"}


def plot_curves(t: TableReport, stem: Path) -> list[tuple]:
    """One learning-curve figure per with/without pair whose runs have curves: clean accuracy,
    adversarial robustness and backdoor success rate against the optimiser step, the standard run
    and its adversarially trained twin, the mean over seeds with a band of ± one sample std (kept in [0, 100]).
    Written to ``<stem>-<n>.png``; the (pair, path) of each."""
    drawable = [p for p in t.pairs if p.curves]
    if not drawable:
        return []
    import matplotlib  # heavy and optional until a table has something to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    for n, p in enumerate(drawable, 1):
        fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(4.2 * len(CURVE_PANELS), 3.6), squeeze=False)
        for ax, (metric, label) in zip(axes[0], CURVE_PANELS.items()):
            for role, setting in (("standard", p.standard), ("adversarial", p.adversarial)):
                curves = p.curves.get(role)
                if not curves:
                    continue
                steps, means, stds = curve_band(curves, metric)
                line, = ax.plot(steps, means, marker=".", label=f"{setting} ({len(curves)} seed(s))")
                if len(curves) > 1:
                    low, high = PERCENT_RANGE  # a band of percentages stays in range too
                    ax.fill_between(steps, [max(m - s, low) for m, s in zip(means, stds)],
                                    [min(m + s, high) for m, s in zip(means, stds)], color=line.get_color(), alpha=0.2)
            ax.set_xlabel("optimiser step")
            ax.set_ylabel(label)
            ax.set_ylim(-3, 103)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7, loc="best")
        path = stem.parent / f"{stem.name}-{n}.png"
        figures.append((p, _save(fig, path, f"{t.paper_table}, {p.label} (preset {t.preset})", t.synthetic)))
    return figures


def plot_heatmap(t: TableReport, path: Path) -> Optional[Path]:
    """The table's heatmap: the paired difference (with minus without, mean over seeds) of its
    metric, one panel per dataset, each square annotated with the mean and its 95% interval (an end
    clipped to [-100, +100] marked with :data:`CLIP_MARK`, said in the colour bar's label)."""
    grid = heatmap_grid(t)
    if not any(c.differences for _, _, cells in grid.values() for c in cells.values()):
        return None
    import matplotlib  # heavy and optional until a table has something to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(grid), figsize=(1.6 * max(len(g[1]) for g in grid.values()) * len(grid) + 2, 4.5),
                             squeeze=False)
    for ax, (ds, (rows, cols, cells)) in zip(axes[0], grid.items()):
        means = np.full((len(rows), len(cols)), np.nan)
        for (r, c), comp in cells.items():
            if comp.mean is not None:
                means[rows.index(r), cols.index(c)] = comp.mean
        image = ax.imshow(means, cmap="RdBu_r", vmin=-100, vmax=100, aspect="auto")
        for (r, c), comp in cells.items():
            ci = comp.interval
            text = "" if comp.mean is None else f"{comp.mean:+.0f}"
            text += f"\n{fmt_interval(ci, signed=True, digits=0)}" if ci is not None else (
                "\n1 seed" if comp.mean is not None else "")
            ax.text(cols.index(c), rows.index(r), text, ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(cols)), cols)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel(t.heatmap["columns"])
        ax.set_ylabel(t.heatmap["rows"])
        ax.set_title(ds)
        fig.colorbar(image, ax=ax, label=f"{t.heatmap['metric']}: with − without (points; "
                                          f"{CLIP_MARK}: interval end clipped to ±100)")
    return _save(fig, path, f"{t.paper_table} (preset {t.preset})", t.synthetic)


def _save(fig, path: Path, title: str, synthetic: bool = False) -> Path:
    import matplotlib.pyplot as plt

    if synthetic:
        fig.suptitle(title + "\nSYNTHETIC DATA: not results", color="#b00")
    else:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    folders.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def plot_saliency(t: TableReport, folder: Path, path: Path) -> Optional[Path]:
    """For each standard / adversarially trained pair whose runs both saved ``saliency.safetensors``
    (the same triggered test images), three rows: the triggered images, the standard model's
    |d logit_target / d x| and the adversarially trained twin's (summed over channels, each map
    scaled to its own maximum), the trigger's pixels outlined."""
    panels = []
    for p in t.pairs:
        files = {role: Path(folder) / run / SALIENCY_FILE for role, run in p.runs.items()}
        if len(files) == 2 and all(f.is_file() for f in files.values()):
            panels.append((p, {role: load_file(str(f)) for role, f in files.items()}))
    if not panels:
        return None
    import matplotlib  # heavy and optional until a table has something to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(maps["standard"]["images"]) for _, maps in panels)
    fig, axes = plt.subplots(3 * len(panels), cols, figsize=(1.8 * cols, 1.9 * 3 * len(panels)), squeeze=False)
    for k, (p, maps) in enumerate(panels):
        region = maps["standard"]["region"].amax(0)
        rows = [("triggered", maps["standard"]["images"], "gray")]
        for role in ("standard", "adversarial"):
            share = p.saliency.get(role)
            label = f"{role}\n{share:.0f}% on trigger" if share is not None else role
            rows.append((label, maps[role]["abs_gradients"].sum(1, keepdim=True), "inferno"))
        for r, (label, batch, cmap) in enumerate(rows):
            for j in range(cols):
                ax = axes[3 * k + r][j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j >= len(batch):
                    ax.axis("off")
                    continue
                img = batch[j]
                shown = img.permute(1, 2, 0).squeeze(-1) if cmap == "gray" else img[0] / img[0].max().clamp_min(1e-12)
                ax.imshow(shown.numpy(), cmap=cmap, vmin=0, vmax=1)
                ax.contour(region.numpy(), levels=[0.5], colors="cyan", linewidths=0.8)
                if j == 0:
                    ax.set_ylabel(label, fontsize=7)
        axes[3 * k][0].set_title(f"{p.dataset}: {p.adversarial_label}", fontsize=8, loc="left")
    fig.suptitle(f"{t.paper_table}: input gradients on triggered images (preset {t.preset})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    folders.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
