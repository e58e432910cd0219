"""Report figures as PNG bytes: ROC / PR curves, score histograms, benchmark heatmaps,
and the approximate-mass trace of flow training.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas directly,
never through pyplot, so no global backend is switched and no window opens.
Every function returns the PNG as bytes, for an atomic write by the caller.
"""

import io
import math

import numpy as np

from keras_tie import metrics

DPI = 130
_STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8,
          "xtick.labelsize": 9, "ytick.labelsize": 9}
ID_COLOR = "tab:blue"
OOD_COLOR = "tab:red"


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _styled(draw):
    """Runs `draw` under keras-tie's font sizes and returns its figure as PNG bytes."""
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        return _png(draw())


def _line_style(name, base_names):
    """Same colour for a score's two variants; dashed for the all-outputs (n+1) variant."""
    from matplotlib import colormaps

    base = name.split("@")[0]
    colors = colormaps["tab10"].colors
    return {"color": colors[base_names.index(base) % len(colors)],
            "linestyle": "--" if name.endswith("@n+1") else "-"}


def roc_pr_figure(curves, title):
    """ROC, PR-In and PR-Out curves of several scores on one ID / OOD pair.

    Args:
        curves: score name -> (ID scores, OOD scores), higher = more OOD.
        title: the figure title (run and OOD set).
    """
    base_names = list(dict.fromkeys(name.split("@")[0] for name in curves))

    def draw():
        figure = _figure(15.5, 4.6)
        roc_ax, pr_in_ax, pr_out_ax = figure.subplots(1, 3)
        for name, (id_scores, ood_scores) in curves.items():
            style = _line_style(name, base_names)
            fpr, tpr, _ = metrics.roc(id_scores, ood_scores)
            label = (f"{name}: {metrics.auroc(id_scores, ood_scores):.3f} / "
                     f"{metrics.aupr_in(id_scores, ood_scores):.3f} / "
                     f"{metrics.aupr_out(id_scores, ood_scores):.3f}")
            roc_ax.plot(fpr, tpr, label=label, **style)
            for ax, positive in ((pr_in_ax, "ID"), (pr_out_ax, "OOD")):
                recall, precision = metrics.pr_curve(id_scores, ood_scores, positive)
                ax.plot(recall, precision, drawstyle="steps-post", **style)
        roc_ax.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, linestyle=":")
        roc_ax.axhline(metrics.TPR_LEVEL, color="0.4", linewidth=0.8, linestyle=":")
        roc_ax.set(title="ROC (ID positive)", xlabel="FPR: share of OOD accepted as ID",
                   ylabel="TPR: share of ID accepted")
        pr_in_ax.set(title="PR-In (ID positive)", xlabel="Recall (ID)",
                     ylabel="Precision (ID)")
        pr_out_ax.set(title="PR-Out (OOD positive)", xlabel="Recall (OOD)",
                      ylabel="Precision (OOD)")
        for ax in (roc_ax, pr_in_ax, pr_out_ax):
            ax.set_xlim(-0.01, 1.01)
            ax.set_ylim(-0.01, 1.01)
            ax.grid(alpha=0.3)
        figure.legend(*roc_ax.get_legend_handles_labels(), loc="outside right center",
                      title="score: AUROC / AUPR-In / AUPR-Out\n(dashed: over all n+1 outputs)")
        figure.suptitle(title)
        return figure

    return _styled(draw)


def histogram_figure(id_scores, ood_scores, threshold, title):
    """Histograms of ID vs OOD scores, one panel per OOD set (TIE paper, Figures 5-6).

    Args:
        id_scores: scores of the ID test set.
        ood_scores: OOD set name -> scores.
        threshold: the deployment threshold (drawn as a dashed line), or None.
        title: the figure title (run and score).
    """
    names = list(ood_scores)
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)

    def draw():
        figure = _figure(4.4 * columns, 3.3 * rows + 0.4)
        axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
        for ax, name in zip(axes, names):
            values = np.concatenate([id_scores, ood_scores[name]])
            bins, log_scale = _bins(values)
            # Heights are shares of each set's images, comparable on log-spaced bins too.
            for values, color, label in ((id_scores, ID_COLOR, "ID"),
                                         (ood_scores[name], OOD_COLOR, name)):
                ax.hist(np.clip(values, bins[0], bins[-1]) if not np.isscalar(bins) else values,
                        bins=bins, weights=np.full(len(values), 1.0 / max(len(values), 1)),
                        histtype="stepfilled", alpha=0.5, color=color,
                        label=f"{label} (n={len(values)})")
            if threshold is not None and np.isfinite(threshold):
                ax.axvline(threshold, color="black", linestyle="--", linewidth=1,
                           label="threshold (95% TPR, held-out ID)")
            if log_scale:
                ax.set_xscale("log")
            ax.set(title=f"ID vs {name}", xlabel="score (higher = more OOD)",
                   ylabel="share of images per bin")
            ax.legend(loc="best", framealpha=0.85)
        for ax in axes[len(names):]:
            ax.set_visible(False)
        figure.suptitle(title)
        return figure

    return _styled(draw)


def mass_trace_figure(trace, id_mass, ood_mass, id_name, ood_name):
    """The approximate mass over training (approximate-mass paper, Figure 1).

    Left: mean approximate mass of the ID and OOD test images after each
    epoch; the curves crossing is the ordering flip the paper observes with
    maximum-likelihood training. Right: histograms of the last epoch's mass.

    Args:
        trace: one dict per epoch with `epoch`, `trace_mass_id`, `trace_mass_ood`.
        id_mass, ood_mass: the last epoch's per-image masses.
        id_name, ood_name: the sets' names.
    """

    def draw():
        figure = _figure(9.6, 3.6)
        curve, histogram = figure.subplots(1, 2)
        epochs = [r["epoch"] for r in trace]
        for key, color, label in (("trace_mass_id", ID_COLOR, f"{id_name} (ID)"),
                                  ("trace_mass_ood", OOD_COLOR, f"{ood_name} (OOD)")):
            curve.plot(epochs, [r[key] for r in trace], marker="o", markersize=3, color=color,
                       label=label)
        curve.set(title="Mean approximate mass per epoch", xlabel="epoch",
                  ylabel="mean ||d log p(x) / dx||")
        curve.xaxis.get_major_locator().set_params(integer=True)
        if all(r["trace_mass_id"] > 0 and r["trace_mass_ood"] > 0 for r in trace):
            curve.set_yscale("log")
        curve.legend(loc="best", framealpha=0.85)
        bins, log_scale = _bins(np.concatenate([id_mass, ood_mass]))
        for values, color, label in ((id_mass, ID_COLOR, id_name), (ood_mass, OOD_COLOR,
                                                                     ood_name)):
            histogram.hist(np.clip(values, bins[0], bins[-1]) if not np.isscalar(bins)
                           else values, bins=bins, histtype="stepfilled", alpha=0.5,
                           color=color, label=f"{label} (n={len(values)})")
        if log_scale:
            histogram.set_xscale("log")
        histogram.set(title=f"Epoch {epochs[-1]}", xlabel="approximate mass (higher = more OOD)",
                      ylabel="images per bin")
        histogram.legend(loc="best", framealpha=0.85)
        return figure

    return _styled(draw)


def _bins(values, count=60):
    """Shared bin edges over the middle 99.8% of `values`; logarithmic for wide positive ranges."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return count, False
    low, high = np.quantile(finite, [0.001, 0.999])
    if low > 0 and high / low > 100:
        return np.geomspace(low, high, count + 1), True
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, count + 1), False


def matrix_figure(panels, title):
    """Heatmaps of runs x sets with the value written in each cell.

    Args:
        panels: list of (panel title, row labels, column labels, values [rows,
            cols] with NaN for "not applicable", value format e.g. "{:.1f}",
            (vmin, vmax), colour map name: `viridis` where higher is better,
            `viridis_r` where lower is).
        title: the figure title.
    """

    def draw():
        widest = max(len(p[2]) for p in panels)
        tallest = max(len(p[1]) for p in panels)
        label_width = max(len(str(r)) for p in panels for r in p[1]) * 0.07
        figure = _figure(len(panels) * (1.0 * widest + label_width + 1.4),
                         0.42 * tallest + 2.2)
        axes = np.atleast_1d(figure.subplots(1, len(panels), squeeze=False)).ravel()
        from matplotlib import colormaps

        for ax, (panel_title, rows, columns, values, fmt, limits, cmap) in zip(axes, panels):
            cmap = colormaps[cmap].with_extremes(bad="0.85")
            values = np.asarray(values, np.float64)
            image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=limits[0],
                              vmax=limits[1], aspect="auto")
            for (i, j), value in np.ndenumerate(values):
                if np.isnan(value):
                    text, color = "n/a", "0.3"
                else:
                    text = fmt.format(value)
                    fraction = (value - limits[0]) / max(limits[1] - limits[0], 1e-12)
                    bright = fraction > 0.6 if not cmap.name.endswith("_r") else fraction < 0.4
                    color = "black" if bright else "white"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9)
            ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
            ax.set_yticks(range(len(rows)), rows)
            ax.set_title(panel_title)
            figure.colorbar(image, ax=ax, shrink=0.8)
        figure.suptitle(title)
        return figure

    return _styled(draw)
