"""Reading prepared data: the arrays on disk, augmentation pipelines, training sets."""
