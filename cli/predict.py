"""`keras-tie predict`: run an exported model (SavedModel or .tflite) on image files."""

import click


@click.command()
@click.argument("model_dir", type=click.Path(exists=True))
@click.argument("images", nargs=-1, required=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Images per call of the model.")
def predict(model_dir, images, batch_size):
    """Classify IMAGES (PNG/JPEG files or .npy batches) with an exported model.

    MODEL_DIR is an export folder (exported/NAME: its highest version), a version
    folder, or a .tflite file of one. Prints one JSON line per image: file, label
    (-1 = rejected), class_name, is_ood, score, uncertainty, garbage_probability, and
    note when the image had to be converted to the model's size or channels. A file
    that cannot be read gets a line with "error"; the exit code is then 1.

    \b
    Examples:
      keras-tie predict exported/mnist digit.png other.jpg
      keras-tie predict exported/mnist/1/tflite/model_int8.tflite batch.npy
    """
    import json

    from keras_tie.export import ExportedModel, predict_files
    from keras_tie.export.savedmodel import ExportError

    try:
        model = ExportedModel(model_dir)
    except (ExportError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    failed = 0
    for line in predict_files(model, images, batch_size=batch_size):
        if "error" in line:
            failed += 1
            click.echo(f"error: {line['file']}: {line['error']}", err=True)
        elif "note" in line:
            click.echo(f"note: {line['file']}: {line['note']}", err=True)
        click.echo(json.dumps(line))
    if failed:
        click.echo(f"{failed} of the inputs could not be read.", err=True)
        raise SystemExit(1)
