"""`ml tune`'s parts: the search space, the cross-validated trial, the study's storage and
its report. The service that runs them is `ml.tune`."""
