"""The training methods, each in one place: its model and train step, its run recipe, its
own pieces (pools, samplers, operators) and, where it has one, its detector.

- `tie`: TIE, Training-Inversion-Exclusion (001_b369f55403bc771c.txt), and its two
  baselines of the same backbone: `static` (a garbage class of static noise, the paper's
  "No TIE") and `plain` (the n-class classifier);
- `flow`: a RealNVP trained with the approximate-mass penalty (004_f7d5548531a0fef9.txt);
- `cvae`: an (n+1)-class classifier on CVAE Type I / II outliers (002_50acf6af2ae3a4e5.txt);
- `repair`: SR-OOD, OOD detection by sample repairing (003_f548187660c0ce3b.txt).

`recipe(name)` gives the module whose `Recipe` the run driver
(`keras_tie.training.runner`) trains; modules are imported on first use, so
validating a config imports no method.
"""

import importlib

# method name -> the package holding its recipe
METHODS = {"tie": "tie", "static": "tie", "plain": "tie", "flow": "flow", "cvae": "cvae",
           "repair": "repair"}


def recipe(name):
    """The `Recipe` of method `name` (`keras_tie.methods.<package>.recipe.Recipe`).

    Raises:
        ValueError: an unknown method.
    """
    if name not in METHODS:
        raise ValueError(f"Unknown method. Received: {name!r}; expected one of "
                         f"{', '.join(METHODS)}.")
    return importlib.import_module(f"keras_tie.methods.{METHODS[name]}.recipe").Recipe
