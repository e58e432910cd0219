"""`keras-tie data`: which datasets are available here, and what one holds.

keras_tie.data is imported inside the commands; it never imports TensorFlow
for `list`, so the command answers in well under a second.
"""

import click

_SPLIT_CHOICES = ("train", "test", "all")
# Longer class lists are cut in `info`, with the number left out.
_MAX_CLASS_NAMES = 20

_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    show_default="$KERAS_TIE_DATA_DIR",
    help="Local data directory with one sub-folder per dataset (mnist/, cifar10/, ...).",
)
_cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    show_default="$KERAS_TIE_CACHE_DIR, else ~/.cache/keras_tie",
    help="Where decoded arrays are cached.",
)


@click.group("data")
def data():
    """List datasets and inspect one."""


@data.command("list")
@_data_dir_option
def list_command(data_dir):
    """Every dataset name: available here or not, and where it would load from."""
    from keras_tie.data import list_datasets

    rows = [
        (r.name, r.kind, "yes" if r.available else "no", r.where if r.available else r.reason)
        for r in list_datasets(data_dir=data_dir)
    ]
    header = ("NAME", "KIND", "AVAILABLE", "WHERE / WHY NOT")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])


@data.command("info")
@click.argument("name")
@_data_dir_option
@_cache_dir_option
@click.option(
    "--split",
    type=click.Choice(_SPLIT_CHOICES),
    default="all",
    show_default=True,
    help="Split(s) to describe.",
)
def info_command(name, data_dir, cache_dir, split):
    """Counts, image shape, classes, source and per-channel mean of dataset NAME."""
    from keras_tie.data import DatasetError, DatasetNotFoundError, UnknownDatasetError, load
    from keras_tie.data import registry

    try:
        spec = registry.resolve(name)
    except UnknownDatasetError as error:
        raise click.UsageError(str(error)) from None
    if spec.kind == registry.SYNTHETIC:
        click.echo(f"{spec.name}: synthetic OOD set, {spec.summary}.")
        click.echo("Generated when loaded, shaped like a reference: load(name, like=<Dataset>).")
        return
    splits = ("train", "test") if split == "all" else (split,)
    loaded, missing = {}, {}
    for part in splits:
        try:
            loaded[part] = load(spec.name, split=part, data_dir=data_dir, cache_dir=cache_dir)
        except DatasetNotFoundError as error:
            missing[part] = str(error)
        except DatasetError as error:
            raise click.ClickException(str(error)) from None
    if not loaded:
        raise click.ClickException("\n".join(missing.values()))
    info = next(iter(loaded.values())).info
    height, width, channels = info.image_shape
    names = ", ".join(info.class_names[:_MAX_CLASS_NAMES])
    if info.num_classes > _MAX_CLASS_NAMES:
        names += f", ... ({info.num_classes - _MAX_CLASS_NAMES} more)"
    click.echo(f"name:         {info.name}")
    click.echo(f"source:       {info.source}")
    click.echo(f"image shape:  {height}x{width}x{channels} (H x W x C)")
    click.echo(f"channels:     {channels}")
    click.echo(f"classes:      {info.num_classes}")
    click.echo(f"class names:  {names}")
    click.echo(f"{'split':<7}{'count':>8}  per-channel mean (in [0, 1])")
    for part in splits:
        if part in missing:
            click.echo(f"{part:<7}{'-':>8}  not available here; looked at:")
            for line in missing[part].splitlines():
                if line.startswith("  - "):
                    click.echo(f"{'':<17}{line.strip()}")
            continue
        dataset = loaded[part]
        mean, _ = dataset.channel_stats()
        click.echo(f"{part:<7}{len(dataset):>8}  {', '.join(f'{m:.4f}' for m in mean)}")
        if dataset.skipped:
            skipped = dataset.skipped
            click.echo(f"{'':<17}skipped {len(skipped)} unreadable file(s), e.g. {skipped[0]}")
