"""Transferability estimates: how well a frozen network's features suit a target, without training.

- ``LogME`` (You et al., ICML 2021; the fixed-point algorithm of their extended version, "Ranking and
  Tuning Pre-trained Models", 2021): for each class, a Bayesian linear regression of the one-hot label
  on the features, with the prior precision alpha and the noise precision beta chosen to maximise the
  evidence p(y | F, alpha, beta); the score is the mean over classes of log evidence / N. Higher means
  the labels are more linearly predictable from the features, and that cannot be bought by overfitting
  (the evidence integrates the weights out). Vectorised over classes: one SVD, then all classes'
  fixed-point iterations as arrays.
- ``proxy_a_distance`` (Ben-David et al., 2007): train a classifier to tell source features from target
  features; PAD = 2 (1 - 2 err) with err its held-out error. 0: indistinguishable, 2: fully separable.
- ``knn_accuracy``: leave-one-out k-nearest-neighbour accuracy on cosine similarity. A plain k-NN on
  frozen features was the strongest of 24 transferability estimators over 42,000 experiments
  (Sorkhei et al., 2025, "k-NN as a Simple and Effective Estimator of Transferability").
- ``linear_probe_accuracy``: stratified cross-validated accuracy of a ridge classifier on the
  standardised features: what a head trained on frozen features (freeze_all, truncate_freeze) can
  reach, measured directly rather than inferred.

Plain NumPy and scikit-learn (installed with MLflow); small, scikit-learn-like objects (``fit``).
"""

from __future__ import annotations

import numpy as np


class LogME:
    """``LogME().fit(features (N, D), labels (N,)) -> score``; ``alphas_``, ``betas_``, ``evidences_`` per class."""

    def __init__(self, iterations: int = 30, tolerance: float = 1e-3):
        self.iterations, self.tolerance = iterations, tolerance

    def fit(self, features: np.ndarray, labels: np.ndarray) -> float:
        f = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels)
        classes = np.unique(labels)
        if f.ndim != 2 or len(f) != len(labels):
            raise ValueError(f"features must be (N, D) with N = {len(labels)} labels, got {f.shape}")
        if len(classes) < 2:
            raise ValueError(f"LogME needs at least 2 classes, got {len(classes)}")
        n, d = f.shape
        y = (labels[:, None] == classes[None, :]).astype(np.float64)  # (N, C) one-hot
        u, s, _ = np.linalg.svd(f, full_matrices=False)  # f = u diag(s) vh; k = min(N, D)
        sigma = (s**2)[:, None]  # (k, 1): eigenvalues of f^T f
        x = u.T @ y  # (k, C): labels in the singular basis
        x2 = x**2
        residual = (y**2).sum(axis=0) - x2.sum(axis=0)  # (C,): the part of y outside f's span
        alpha, beta = np.ones(y.shape[1]), np.ones(y.shape[1])
        for _ in range(self.iterations):
            t = alpha / beta
            gamma = (sigma / (sigma + t)).sum(axis=0)
            m2 = (sigma * x2 / (t + sigma) ** 2).sum(axis=0)
            res2 = (x2 / (1 + sigma / t) ** 2).sum(axis=0) + residual
            alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
            if np.all(np.abs(alpha / beta - t) / t <= self.tolerance):
                break
        t = alpha / beta
        m2 = (sigma * x2 / (t + sigma) ** 2).sum(axis=0)
        res2 = (x2 / (1 + sigma / t) ** 2).sum(axis=0) + residual
        # log p(y | F, alpha, beta) per class; D counts every feature, including directions f lacks
        evidence = (
            d / 2 * np.log(alpha)
            + n / 2 * np.log(beta)
            - 0.5 * np.log(alpha + beta * sigma).sum(axis=0)
            - 0.5 * (d - len(s)) * np.log(alpha)
            - beta / 2 * res2
            - alpha / 2 * m2
            - n / 2 * np.log(2 * np.pi)
        )
        self.alphas_, self.betas_, self.evidences_ = alpha, beta, evidence / n
        return float(self.evidences_.mean())


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0) -> float:
    """PAD from a linear domain classifier's error on a held-out half (balanced, standardised features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    n = min(len(source), len(target))
    a, b = source[rng.permutation(len(source))[:n]], target[rng.permutation(len(target))[:n]]
    x = np.concatenate([a, b]).astype(np.float64)
    y = np.concatenate([np.zeros(n), np.ones(n)])
    order = rng.permutation(2 * n)
    x, y = x[order], y[order]
    half = n  # train on one half, test on the other
    scaler = StandardScaler().fit(x[:half])
    classifier = LogisticRegression(max_iter=1000, C=1.0).fit(scaler.transform(x[:half]), y[:half])
    error = 1.0 - classifier.score(scaler.transform(x[half:]), y[half:])
    return float(2.0 * (1.0 - 2.0 * min(error, 0.5)))


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out accuracy of a k-NN vote on cosine similarity (a tied vote goes to the nearer class)."""
    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    similarity = f @ f.T
    np.fill_diagonal(similarity, -np.inf)  # leave each image out of its own vote
    k = min(k, len(f) - 1)
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]  # (N, k), nearest first
    classes, index = np.unique(labels, return_inverse=True)
    votes = np.zeros((len(f), len(classes)))
    weights = 1.0 + 1e-6 * np.arange(k, 0, -1)  # equal votes, the nearer neighbour breaking a tie
    np.add.at(votes, (np.repeat(np.arange(len(f)), k), index[nearest].ravel()), np.tile(weights, len(f)))
    return float(np.mean(classes[votes.argmax(axis=1)] == labels))


def linear_probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 3, seed: int = 0) -> float:
    """Mean held-out accuracy of a linear classifier on the standardised features, over stratified folds.

    A ridge (least-squares one-vs-rest) classifier rather than a logistic regression: on 1,000 images of
    128 features it took 0.1 s against lbfgs's 1.9 s, and the advisor fits 8 per target."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    folds = max(2, min(folds, int(np.bincount(np.unique(labels, return_inverse=True)[1]).min())))
    probe = make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.0))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, np.asarray(features, dtype=np.float64), labels, cv=split).mean())
