"""Evaluation of LensNet artifacts: instance metrics, the daemon's outcomes on whole seasons,
and the report (:func:`model.evaluation.run.evaluate`)."""
