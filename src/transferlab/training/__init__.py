"""Training with Lightning: the module and its phase/learning-rate plan, loaders seeded per epoch,
the feature cache of frozen regimes, tracked and resumable fits, and the comparison's work."""
