"""`keras-tie export`: a trained run as a TF Serving SavedModel (and TFLite files)."""

import click


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Model folder (TF Serving's base path); the version goes in OUTPUT/N. "
              "Default: exported/<name of RUN_DIR>.")
@click.option("--version", "version", type=click.IntRange(min=1),
              help="Version number. Default: one above the highest in OUTPUT (1 if none).")
@click.option("--score", default="ue", show_default=True,
              help="OOD score computed in the graph: ue (UE of the full softmax), garbage "
              "(probability of the garbage class), or the evaluation's msp, energy, entropy "
              "(over the n class outputs) and msp@n+1, energy@n+1, entropy@n+1 (over all "
              "outputs). Higher = more OOD.")
@click.option("--threshold", type=float,
              help="Reject when score > THRESHOLD. Default: tau_T of the run for ue, 0.5 for "
              "garbage; otherwise (msp, energy, entropy, ue of a plain run) the value "
              "accepting 95% of in-distribution validation (else training) images.")
@click.option("--tflite", "tflite", default="", metavar="VARIANTS",
              help="Also convert to TFLite: comma-separated float32,float16,int8,int8_full "
              "(int8: int8 network with a float32 head; int8_full: every operator int8, for "
              "integer-only hardware).")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Where the run's dataset is (int8 calibration, threshold calibration). "
              "Default: the run's, else $KERAS_TIE_DATA_DIR.")
@click.option("--representative-images", type=click.IntRange(min=1), default=300,
              show_default=True, help="Training images calibrating the int8 ranges.")
def export(run_dir, output, version, score, threshold, tflite, data_dir, representative_images):
    """Export RUN_DIR's classifier, with its reject rule inside, for TF Serving and TFLite.

    Writes OUTPUT/VERSION/ (saved_model.pb, variables/, assets.extra/keras_tie.json,
    tflite/*.tflite). The serving_default signature takes `images`, float32 pixels
    in [0, 255] of shape [batch, H, W, C], and returns label (-1 = rejected),
    is_ood, score, uncertainty, garbage_probability, probabilities. See docs/export.md.

    \b
    Examples:
      keras-tie export runs/mnist_tie --output exported/mnist
      keras-tie export runs/mnist_tie -o exported/mnist --tflite float32,float16,int8
      keras-tie export runs/mnist_plain --threshold 0.2
      keras-tie export runs/mnist_tie --score energy
    """
    from keras_tie.data import DatasetError
    from keras_tie.export import export_run
    from keras_tie.export.tflite import check_variants

    try:
        variants = check_variants(tflite)
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    try:
        result = export_run(run_dir, output, version=version, score=score, threshold=threshold,
                            tflite=variants, data_dir=data_dir,
                            representative_images=representative_images)
    except (ValueError, FileExistsError, DatasetError) as error:
        raise click.ClickException(str(error)) from error
    meta = result.metadata
    click.echo(f"Exported: {result.path}")
    click.echo(f"  input: images float32 {meta['input']['shape']} in [0, 255]")
    click.echo(f"  score: {meta['score']['name']} > {meta['score']['threshold']:.6g} -> rejected "
               f"({meta['score']['threshold_source']})")
    for variant, info in meta["tflite"].items():
        click.echo(f"  tflite {variant}: {info['file']} ({info['bytes'] / 1e6:.2f} MB)")
