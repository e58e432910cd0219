"""Is one run's OOD detection better than another's? Paired bootstrap of AUROC.

    python benchmarks/paired_auroc.py RUN_A RUN_B [--ood cifar100] [--scores odin,energy,...]
        [--resamples 1000]

Both runs (same ID dataset) are scored by `keras_tie.evaluation.evaluate` (the code behind
`keras-tie evaluate`; each run's default scores, or those of `--scores` that apply to it) on
the full ID test set and the OOD test set. AUROC (ID positive, as everywhere in keras-tie) is then recomputed on `--resamples`
bootstrap resamples: each resample draws the ID images and the OOD images with replacement,
the same draw for every score of both runs, because both runs saw the same images. That
pairing is what makes a small difference between two runs measurable: the image-to-image
variation that two independent intervals would both carry cancels in the difference.

Reported: each score's AUROC with its 95% percentile interval; for every score name the two
runs share, the difference A - B with its interval; and the difference between each run's
best score, where "best" is chosen on the point estimates of the same images (a selection
that favours neither run, but makes that interval slightly optimistic for both maxima).
The interval covers the test images' sampling only, not the training seed: two seeds of the
same preset can differ by more (docs/cifar10.md).

Writes benchmarks/results/paired_auroc_<ID>_<OOD>.md (or --output) and prints it.
"""

import argparse
import os
import platform
import sys
import time

import numpy as np


def bootstrap_auroc(scores, id_name, ood_name, resamples, seed):
    """AUROC of every (run, score) on the original sets and on paired bootstrap resamples.

    Args:
        scores: run label -> score name -> set name -> numpy scores (higher = more OOD),
            as `Evaluation.scores`.
        resamples: number of resamples; seed: their seed.

    Returns:
        (point, draws): {(run, score): AUROC} and {(run, score): array [resamples]}.
    """
    from keras_tie import metrics

    pairs = [(run, name) for run, by_score in scores.items() for name in by_score]
    n_id = {len(scores[run][name][id_name]) for run, name in pairs}
    n_ood = {len(scores[run][name][ood_name]) for run, name in pairs}
    if len(n_id) != 1 or len(n_ood) != 1:
        raise ValueError(f"The runs were scored on different image counts: ID {sorted(n_id)}, "
                         f"OOD {sorted(n_ood)}; a paired bootstrap needs the same images.")
    n_id, n_ood = n_id.pop(), n_ood.pop()
    rng = np.random.default_rng(seed)
    id_draws = rng.integers(0, n_id, size=(resamples, n_id))
    ood_draws = rng.integers(0, n_ood, size=(resamples, n_ood))
    point, draws = {}, {}
    for run, name in pairs:
        id_scores, ood_scores = scores[run][name][id_name], scores[run][name][ood_name]
        point[(run, name)] = metrics.auroc(id_scores, ood_scores)
        draws[(run, name)] = resampled_auroc(id_scores, ood_scores, id_draws, ood_draws)
    return point, draws


def resampled_auroc(id_scores, ood_scores, id_draws, ood_draws, chunk=100):
    """AUROC (ID positive, higher score = more OOD) of every resample, without a Python loop.

    A resample is a multiset of the original scores, so its AUROC is the Mann-Whitney
    statistic with each image weighted by how often it was drawn: the mean over drawn pairs
    (ID, OOD) of [ID score < OOD score] + 1/2 [equal]. With the ID scores sorted once, the
    weight of ID images below each OOD score is a cumulative sum read at its sorted position.
    `chunk` resamples at a time bound the memory (two [chunk, N] arrays).

    Returns:
        A float array [resamples], equal to `keras_tie.metrics.auroc` on each resample.
    """
    order = np.argsort(id_scores, kind="stable")
    sorted_id = np.asarray(id_scores)[order]
    rank_of = np.empty_like(order)
    rank_of[order] = np.arange(len(order))
    ood_scores = np.asarray(ood_scores)
    below = np.searchsorted(sorted_id, ood_scores, side="left")
    not_above = np.searchsorted(sorted_id, ood_scores, side="right")
    n_id, n_ood = id_draws.shape[1], ood_draws.shape[1]
    out = []
    for start in range(0, len(id_draws), chunk):
        ids, oods = id_draws[start:start + chunk], ood_draws[start:start + chunk]
        rows = np.arange(len(ids))[:, None]
        id_counts = np.zeros((len(ids), n_id + 1))  # column 0: nothing below the lowest score
        np.add.at(id_counts, (rows, rank_of[ids] + 1), 1.0)
        cumulative = np.cumsum(id_counts, axis=1)
        id_below = cumulative[:, below] + 0.5 * (cumulative[:, not_above] - cumulative[:, below])
        ood_counts = np.zeros((len(oods), len(ood_scores)))
        np.add.at(ood_counts, (rows, oods), 1.0)
        out.append(np.sum(ood_counts * id_below, axis=1) / (n_id * n_ood))
    return np.concatenate(out)


def interval(values):
    """The 95% percentile interval."""
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--ood", default="cifar100", help="One OOD set.")
    parser.add_argument("--scores", default=None,
                        help="Comma-separated score names; default: each run's default scores.")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.resamples < 100:
        parser.error(f"--resamples must be at least 100 for a 95% interval. "
                     f"Received: {args.resamples}")
    if "," in args.ood:
        parser.error(f"--ood takes one OOD set. Received: {args.ood!r}")

    from keras_tie.evaluation import evaluate
    from keras_tie.evaluation.protocol import ID_SET

    start = time.time()
    scores = [s.strip() for s in args.scores.split(",") if s.strip()] if args.scores else None
    evaluation = evaluate([args.run_a, args.run_b], [args.ood], scores, data_dir=args.data_dir,
                          verbose=0, log=print)
    labels = [run["label"] for run in evaluation.runs]
    if len(set(labels)) != 2:
        parser.error(f"The two runs need different folder names. Received: {labels}")
    point, draws = bootstrap_auroc(evaluation.scores, ID_SET, args.ood, args.resamples,
                                   args.seed)
    id_name = evaluation.id_set["name"]
    a, b = labels
    lines = [f"# Paired bootstrap of AUROC, {id_name} vs {args.ood}: {a} against {b}", "",
             f"`python benchmarks/paired_auroc.py {' '.join(sys.argv[1:])}`: "
             f"{evaluation.id_set['count']} {id_name} test images against "
             f"{evaluation.ood_sets[0]['count']} {args.ood} images, "
             + ("each run's default scores" if scores is None else "the scores asked for")
             + f" (`keras-tie evaluate`), {args.resamples} paired resamples (seed {args.seed}). "
             f"AUROC in %, ID positive; 95% percentile intervals. "
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; "
             f"{time.time() - start:.0f} s.", "",
             "## Each score", "", "| run | score | AUROC | 95% interval |", "|---|---|---|---|"]
    for (run, name), value in point.items():
        low, high = interval(draws[(run, name)])
        lines.append(f"| {run} | `{name}` | {100 * value:.2f} | {100 * low:.2f} - "
                     f"{100 * high:.2f} |")
    lines += ["", f"## Differences, {a} - {b}", "",
              "| comparison | difference | 95% interval | resamples with A > B |",
              "|---|---|---|---|"]
    shared = [name for name in evaluation.scores[a] if name in evaluation.scores[b]]
    best = {run: max((n for (r, n) in point if r == run), key=lambda n: point[(run, n)])
            for run in labels}
    comparisons = [(f"best score: `{best[a]}` - `{best[b]}`", best[a], best[b])]
    comparisons += [(f"`{name}`", name, name) for name in shared]
    for text, name_a, name_b in comparisons:
        difference = draws[(a, name_a)] - draws[(b, name_b)]
        low, high = interval(difference)
        lines.append(f"| {text} | {100 * (point[(a, name_a)] - point[(b, name_b)]):+.2f} | "
                     f"{100 * low:+.2f} - {100 * high:+.2f} | "
                     f"{100 * np.mean(difference > 0):.1f}% |")
    text = "\n".join(lines) + "\n"
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                         f"paired_auroc_{id_name}_{args.ood}.md")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
