"""Evaluation of trained runs: the TIE protocol's two levels, metrics, report and figures.

```python
from keras_tie.evaluation import evaluate, write_report

evaluation = evaluate(["runs/mnist_tie", "runs/mnist_plain"],
                      ood_sets=["fashion_mnist", "cifar10", "gaussian"])
write_report(evaluation, "reports/mnist")
```

Scores follow one convention: higher = more likely OOD. See docs/evaluation.md.
"""

from keras_tie.evaluation.protocol import (
    DEFAULT_OOD_SETS,
    DEFAULT_SCORES,
    FLOW_DEFAULT_SCORES,
    Evaluation,
    evaluate,
    parse_params,
    scores_for_run,
)
from keras_tie.evaluation.report import write_report
from keras_tie.evaluation.runs import EvaluationError, Run, load_run, load_runs

__all__ = [
    "DEFAULT_OOD_SETS",
    "DEFAULT_SCORES",
    "Evaluation",
    "FLOW_DEFAULT_SCORES",
    "EvaluationError",
    "Run",
    "evaluate",
    "load_run",
    "load_runs",
    "parse_params",
    "scores_for_run",
    "write_report",
]
