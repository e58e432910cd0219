"""Entry point of the `keras-tie` command.

Heavy imports (TensorFlow, Keras) happen inside command bodies so that
`keras-tie --help` answers instantly.
"""

import click

import keras_tie
from keras_tie.cli.data import data
from keras_tie.cli.evaluate import evaluate
from keras_tie.cli.export import export
from keras_tie.cli.predict import predict
from keras_tie.cli.train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(keras_tie.__version__, prog_name="keras-tie")
def cli():
    """keras-tie: train image classifiers that know what they don't know."""


cli.add_command(data)
cli.add_command(evaluate)
cli.add_command(export)
cli.add_command(predict)
cli.add_command(train)


if __name__ == "__main__":
    cli()
