"""`keras-tie train`: train a TIE, static-garbage, CVAE-outlier or plain classifier, an
approximate-mass flow, or an SR-OOD repair network, into a run folder."""

import datetime
import os

import click


@click.command()
@click.option("--dataset", "-d", help="Dataset name (see `keras-tie data list`). "
              "Defaults to the preset's, else 'digits'.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="A TOML config. Default: configs/DATASET.toml (configs/flow_DATASET.toml with "
              "--method flow, configs/repair_DATASET.toml with --method repair, configs/cvae_DATASET.toml "
              "with --method cvae) when it exists.")
@click.option("--method", type=click.Choice(["tie", "static", "plain", "flow", "repair", "cvae"]),
              help="tie: Training-Inversion-Exclusion; static: garbage class of static "
              "noise (the paper's 'No TIE'); plain: n-class classifier; flow: RealNVP with "
              "the approximate-mass penalty (preset configs/flow_DATASET.toml); repair: "
              "SR-OOD repair network (preset configs/repair_DATASET.toml); cvae: (n+1)-class "
              "classifier on CVAE Type I/II outliers (preset configs/cvae_DATASET.toml).")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (preset: 20).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size.")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--limit", type=click.IntRange(min=0),
              help="Train on a deterministic subset of this many images (0: all).")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Local data directory (default: $KERAS_TIE_DATA_DIR).")
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Run folder. Default: runs/DATASET_METHOD_TIMESTAMP.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --output from its last checkpoint.")
@click.option("--alpha", type=click.FloatRange(min=0),
              help="Method flow: weight of each image's approximate mass in the loss "
              "(flow.alpha; presets: 0.03125 = the paper's alpha 2 on a batch-mean gradient "
              "at batch 64; 0 = maximum likelihood only).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, e.g. --set tie.alpha=0.2 (repeatable).")
@click.option("--quiet", is_flag=True, help="One line per epoch instead of a progress bar.")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multi_worker"]),
              default="default", show_default=True,
              help="tf.distribute strategy. mirrored: one replica per GPU of this machine (per "
              "logical CPU device without GPUs); multi_worker: several machines, described by "
              "TF_CONFIG (README, 'Several machines'). --batch-size is the global batch.")
@click.option("--cpu-devices", type=click.IntRange(min=0), default=0, show_default=True,
              help="Split the CPU into this many logical devices first (0: no split), so "
              "--strategy mirrored can run on a machine without GPUs (for tests).")
def train(dataset, config_path, method, epochs, batch_size, seed, limit, data_dir, output,
          resume, alpha, overrides, quiet, strategy, cpu_devices):
    """Train a classifier that knows what it doesn't know.

    \b
    Examples:
      keras-tie train --dataset digits --epochs 3
      keras-tie train --dataset mnist --method static
      keras-tie train --output runs/mnist_tie --resume
      keras-tie train --dataset fashion_mnist --method flow --alpha 0
      keras-tie train --dataset cifar10 --method repair --set repair.perceptual=runs/cifar10_plain
      keras-tie train --dataset mnist --method cvae
      keras-tie train --dataset mnist --strategy mirrored --batch-size 256
    """
    from keras_tie.config import Config, ConfigError, parse_override

    if resume and not output:
        raise click.UsageError("--resume needs --output RUN_DIR: the run folder to continue.")
    values = {"dataset": dataset, "method": method, "epochs": epochs, "batch_size": batch_size,
              "seed": seed, "limit": limit, "data_dir": data_dir, "flow.alpha": alpha}
    try:
        for text in overrides:
            key, value = parse_override(text)
            values[key] = value
        if resume:
            if config_path:
                raise click.UsageError(
                    f"--config is read when a run starts; a resumed run keeps the config saved "
                    f"in its run.json. Received: --config {config_path} with --resume.")
            _refuse_changes_on_resume(output, values)
            config = None
            if epochs is not None:
                config = Config().replace(epochs=epochs)
        else:
            path = config_path or _preset(dataset or "digits", method)
            config = Config.load(path, values)
    except ConfigError as error:
        raise click.UsageError(str(error)) from error
    if alpha is not None and (resume or config.method != "flow"):
        raise click.UsageError("--alpha is the approximate-mass penalty of --method flow "
                               "(and a resumed run keeps its own).")

    if output is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        output = os.path.join("runs", f"{config.dataset}_{config.method}_{stamp}")

    if cpu_devices and strategy != "mirrored":
        raise click.UsageError(f"--cpu-devices splits the CPU for --strategy mirrored. Received: "
                               f"--strategy {strategy} --cpu-devices {cpu_devices}.")
    from keras_tie.training.distribute import StrategyError, make_strategy
    from keras_tie.training.distribute import is_chief as distribution_is_chief

    try:  # before any TensorFlow op: a CPU split and MultiWorkerMirroredStrategy need that
        distribution = make_strategy(strategy, cpu_devices)
    except StrategyError as error:
        raise click.UsageError(str(error)) from error

    from keras_tie.data import DatasetError
    from keras_tie.training.callbacks import TrainingDiverged
    from keras_tie.training.checkpoint import CheckpointError
    from keras_tie.training.runner import train as run_training

    try:
        result = run_training(config, output, resume=resume, verbose=2 if quiet else "auto",
                              strategy=distribution)
    except (DatasetError, ConfigError, FileExistsError, FileNotFoundError, CheckpointError,
            TrainingDiverged) as error:
        raise click.ClickException(str(error)) from error
    if not distribution_is_chief(distribution):
        click.echo(f"Worker done; the chief wrote the run folder {output}.")
        return
    click.echo(f"Run folder: {result.run_dir}")
    for key, value in result.test_metrics.items():
        click.echo(f"  test {key}: {value:.4f}" if isinstance(value, float)
                   else f"  test {key}: {value}")
    if result.tau is not None:
        click.echo(f"  tau_T: {result.tau:.4f}")


def _preset(dataset, method):
    """configs/DATASET.toml, or configs/METHOD_DATASET.toml for --method flow, repair or cvae
    (None if absent: then the defaults apply)."""
    from keras_tie.config import preset_path

    return preset_path(f"{method}_{dataset}" if method in ("flow", "repair", "cvae")
                       else dataset)


# What a resumed run may be given that differs from its saved config (the runner replaces
# nothing else, keras_tie.training.runner.train).
RESUME_MAY_CHANGE = ("epochs",)


def _refuse_changes_on_resume(output, values):
    """Refuses options and --set values that differ from the saved config of the run in
    `output` (they would be ignored: a resumed run keeps its own config)."""
    from keras_tie import run_folder
    from keras_tie.config import Config

    if not run_folder.is_run(output):
        return  # the runner says that there is nothing to resume
    run_file = run_folder.run_path(output)
    saved = Config.from_dict(run_folder.read_record(output)["config"])
    given = {key: value for key, value in values.items() if key not in RESUME_MAY_CHANGE}
    changed = saved.differences(saved.with_overrides(given))
    if changed:
        listed = "; ".join(f"{key} = {new!r} (saved: {old!r})"
                           for key, (old, new) in sorted(changed.items()))
        raise click.UsageError(
            f"A resumed run keeps the config saved in {run_file}; only --epochs may be "
            f"raised. These differ from it: {listed}. Start a new run (another --output) to "
            "change them.")
