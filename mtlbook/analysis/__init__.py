"""Analysis: what a user runs on their own models and data, beyond training one model.

* :mod:`~mtlbook.analysis.compare`: the comparison harness, :func:`compare` (models ×
  weightings × seeds by name or factory, tabulated with intervals), and its name registries;
* :mod:`~mtlbook.analysis.runs`: the one runner of seeds × configurations under the harness and
  the book's studies (:func:`~mtlbook.analysis.runs.repeat_fits`, its trainers);
* :mod:`~mtlbook.analysis.intervals`: Student-t intervals, paired gains, verdicts and the
  ``mean [lo, hi]`` formatter;
* :mod:`~mtlbook.analysis.seesaw`: one task's gain against another's, with the Pareto front;
* :mod:`~mtlbook.analysis.transfer`: the negative-transfer check over seeds;
* :mod:`~mtlbook.analysis.gates`: the gates of mixture-of-experts models;
* :mod:`~mtlbook.analysis.experts`: whether their experts are used well;
* :mod:`~mtlbook.analysis.gradients`: the tasks' gradients on the shared parameters, their
  conflict during training, and what gradient surgery does to each step;
* :mod:`~mtlbook.analysis.mixing`: the learned mixing of cross-stitch and sluice networks;
* :mod:`~mtlbook.analysis.relatedness`: how related the tasks' labels are;
* :mod:`~mtlbook.analysis.truth`: predictions scored against a simulator's true rates;
* :mod:`~mtlbook.analysis.serving`: export for serving, latency and file size.
"""

from . import (
    compare,
    experts,
    gates,
    gradients,
    intervals,
    mixing,
    relatedness,
    runs,
    seesaw,
    serving,
    transfer,
    truth,
)

__all__ = [
    "compare",
    "experts",
    "gates",
    "gradients",
    "intervals",
    "mixing",
    "relatedness",
    "runs",
    "seesaw",
    "serving",
    "transfer",
    "truth",
]
