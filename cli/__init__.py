"""The keras-tie command-line application (installed as keras_tie.cli)."""
