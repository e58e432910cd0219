"""`keras-tie evaluate`: level-1 and level-2 OOD evaluation of runs, with a report folder."""

import os

import click


def _split(text):
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


@click.command(short_help="OOD evaluation of runs (levels 1 and 2) with a report.")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--ood", "ood", metavar="SET,SET,...",
              help="OOD sets, e.g. fashion_mnist,cifar10,cifar100,gaussian,uniform,sphere. "
              "Default: mnist, fashion_mnist, cifar10, cifar100, gaussian, uniform and sphere, "
              "minus the runs' own dataset.")
@click.option("--scores", default=None, metavar="NAME,NAME,...",
              show_default="ue,garbage,msp,odin,energy,mahalanobis,entropy for classifiers; "
              "approximate_mass,nll for flows; repair for repair runs",
              help="Scores. A name gives every variant the run has (msp -> msp and, with a "
              "garbage class, msp@n+1); name@n+1 gives that variant only.")
@click.option("--param", "params", multiple=True, metavar="SCORE.KEY=VALUE",
              help="A score parameter, e.g. --param odin.epsilon=0.002 --param "
              "energy.temperature=2 --param mahalanobis.epsilon=0.001 (repeatable).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Report folder. Default: RUN_DIR/evaluation for one run; required for "
              "several.")
@click.option("--limit", type=click.IntRange(min=1),
              help="At most N images per set (ID test, each OOD set, held-out ID, Mahalanobis "
              "fit), stratified and deterministic.")
@click.option("--balance", is_flag=True,
              help="Subsample the larger of ID and OOD to the smaller's size for the level-2 "
              "metrics (seeded).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the synthetic sets, the balancing and the ID test half.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              show_default="the run's data_dir, else $KERAS_TIE_DATA_DIR",
              help="Local data directory.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Images per forward pass.")
@click.option("--no-figures", is_flag=True, help="Write metrics.json and report.md only.")
@click.option("--quiet", is_flag=True, help="No progress bars or progress lines.")
def evaluate(run_dirs, ood, scores, params, report_dir, limit, balance, seed, data_dir,
             batch_size, no_figures, quiet):
    """Evaluate runs on in-distribution test data and OOD sets; write a report.

    Several RUN_DIRs (e.g. TIE, static and plain runs on the same dataset) are
    evaluated on the same images and scores and shown side by side. Scores
    follow one convention: higher = more likely OOD.

    \b
    Examples:
      keras-tie evaluate runs/mnist_tie --ood fashion_mnist,cifar10,gaussian
      keras-tie evaluate runs/mnist_tie runs/mnist_static runs/mnist_plain \\
          --report reports/mnist --balance
      keras-tie evaluate runs/mnist_tie --scores mahalanobis,odin --param odin.epsilon=0
      keras-tie evaluate runs/fashion_mnist_flow --ood mnist --balance
    """
    if report_dir is None:
        if len(run_dirs) > 1:
            raise click.UsageError("--report DIR is needed when several runs are evaluated "
                                   "together.")
        report_dir = os.path.join(run_dirs[0], "evaluation")

    from keras_tie.data import DatasetError
    from keras_tie.evaluation import EvaluationError, evaluate as run_evaluation, parse_params
    from keras_tie.evaluation import write_report

    echo = (lambda line: None) if quiet else click.echo
    try:
        evaluation = run_evaluation(
            list(run_dirs), _split(ood), None if scores is None else _split(scores) or [],
            params=parse_params(params), limit=limit, balance=balance, seed=seed,
            data_dir=data_dir, batch_size=batch_size, verbose=0 if quiet else 1, log=echo)
    except (EvaluationError, DatasetError) as error:
        raise click.ClickException(str(error)) from error
    paths = write_report(evaluation, report_dir, figures=not no_figures)
    for note in evaluation.notes:
        click.echo(f"Note: {note}")
    click.echo(f"Report: {paths['report']}")
    click.echo(f"Metrics: {paths['metrics']}")
    click.echo(f"Figures: {len(paths['figures'])} PNG files in {report_dir}")
