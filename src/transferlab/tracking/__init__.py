"""MLflow: the store and its pre-flight check, runs (parent, provenance, nothing left RUNNING),
Lightning's logger as the training stages use it, and the model registry."""
