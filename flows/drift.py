"""Drift statistics: a window of production predictions against the served version's reference.

Plain numpy and scipy, no Prefect: the ``drift-check`` flow (flows/drift_flow.py) and ``onebox
drift`` call :func:`compare`. Four families of two-sample tests, each between the reference (the
version's held-out split, flows/reference.py) and the window:

- each class's predicted probability: Kolmogorov-Smirnov, Bonferroni-corrected over the classes;
- the predicted-class histogram: chi-square test of homogeneity (the reference is a sample too,
  not the truth), classes too rare for the approximation pooled into one bin;
- the embedding: maximum mean discrepancy with an RBF kernel (median-heuristic bandwidth) on the
  embedding reduced by a PCA fit on the reference, its p-value from a permutation test;
- the confidence (top probability): one-sided Kolmogorov-Smirnov, that it dropped.

The false-alarm rate is split evenly over the families (and a family's share over its classes),
so by the union bound a clean window is flagged at most that often. A model without an embedding
output has three families, each with a third.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from flows.drift_window import DriftTest

PCA_COMPONENTS = 10
# The MMD's kernel matrix grows with the square of reference + window: a seeded subset of a larger reference.
MMD_MAX_REFERENCE = 1000
MIN_EXPECTED_COUNT = 5.0  # below it, chi-square's approximation is poor: such classes share one bin
SEED = 0  # the permutations and subsets are seeded: the same window gives the same answer


def pca_projection(
    reference: np.ndarray, components: int = PCA_COMPONENTS, *, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's mean and its top principal directions (D, d), d <= ``components``.

    A wide embedding (resnet's 512, efficientnet's 1280 values) gets a randomized SVD (a seeded
    range finder with two power iterations): the few top directions at a fraction of the cost
    of a full SVD, which took tens of seconds on a busy 2-core machine.
    """
    mean = reference.mean(axis=0)
    centered = (reference - mean).astype(np.float64)
    rank = min(centered.shape)
    if rank > 4 * components:
        rng = rng or np.random.default_rng(SEED)
        basis = centered @ rng.normal(size=(centered.shape[1], components + 10))
        for _ in range(2):
            basis = centered @ (centered.T @ np.linalg.qr(basis)[0])
        range_basis = np.linalg.qr(basis)[0]
        _, singular, directions = np.linalg.svd(range_basis.T @ centered, full_matrices=False)
    else:
        _, singular, directions = np.linalg.svd(centered, full_matrices=False)
    keep = int((singular > singular[0] * 1e-6).sum()) if singular.size and singular[0] > 0 else 0
    return mean, directions[: max(min(keep, components), 1)].T


def mmd_permutation_test(
    x: np.ndarray, y: np.ndarray, *, permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Squared MMD (biased estimate) of samples ``x`` and ``y`` and its permutation p-value.

    The kernel is RBF with the median pairwise distance of the pooled sample as bandwidth; every
    permutation reuses the one kernel matrix.
    """
    pooled = np.concatenate([x, y]).astype(np.float64)
    squares = (pooled**2).sum(axis=1)
    distances = np.maximum(squares[:, None] + squares[None, :] - 2 * pooled @ pooled.T, 0.0)
    upper = distances[np.triu_indices(len(pooled), k=1)]
    bandwidth = float(np.median(upper[upper > 0])) if (upper > 0).any() else 1.0
    kernel = np.exp(-distances / (2 * bandwidth))  # bandwidth is a squared distance here
    weights = np.concatenate([np.full(len(x), 1 / len(x)), np.full(len(y), -1 / len(y))])
    observed = float(weights @ kernel @ weights)
    shuffled = np.stack([rng.permutation(weights) for _ in range(permutations)], axis=1)
    null = np.einsum("ib,ib->b", kernel @ shuffled, shuffled)
    return observed, float((1 + (null >= observed - 1e-12).sum()) / (1 + permutations))


def histogram_test(reference_classes: np.ndarray, window_classes: np.ndarray, num_classes: int) -> tuple[float, float]:
    """Chi-square test that both samples' predicted classes come from one distribution."""
    table = np.stack(
        [np.bincount(reference_classes, minlength=num_classes), np.bincount(window_classes, minlength=num_classes)]
    ).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]  # a class neither predicted tells nothing
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    rare = expected.min(axis=0) < MIN_EXPECTED_COUNT
    if rare.any():
        table = np.column_stack([table[:, ~rare], table[:, rare].sum(axis=1)])
    if table.shape[1] < 2:
        return 0.0, 1.0
    statistic, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    return float(statistic), float(p_value)


def compare(
    reference_probabilities: np.ndarray,
    window_probabilities: np.ndarray,
    *,
    classes: tuple[str, ...],
    false_alarm_rate: float,
    permutations: int,
    reference_embeddings: np.ndarray | None = None,
    window_embeddings: np.ndarray | None = None,
) -> tuple[DriftTest, ...]:
    """Every test of the window against the reference; the embedding's only when both have one."""
    rng = np.random.default_rng(SEED)
    with_embedding = reference_embeddings is not None and window_embeddings is not None
    family_alpha = false_alarm_rate / (4 if with_embedding else 3)
    tests = []
    for index, name in enumerate(classes):
        result = stats.ks_2samp(window_probabilities[:, index], reference_probabilities[:, index])
        tests.append(
            DriftTest("class_probability_ks", result.statistic, result.pvalue, family_alpha / len(classes), name)
        )
    chi2, chi2_p = histogram_test(
        reference_probabilities.argmax(1), window_probabilities.argmax(1), reference_probabilities.shape[1]
    )
    tests.append(DriftTest("predicted_class_chi2", chi2, chi2_p, family_alpha))
    if reference_embeddings is not None and window_embeddings is not None:
        sample = reference_embeddings
        if len(sample) > MMD_MAX_REFERENCE:
            sample = sample[np.sort(rng.choice(len(sample), MMD_MAX_REFERENCE, replace=False))]
        mean, directions = pca_projection(sample, rng=rng)
        mmd, mmd_p = mmd_permutation_test(
            (sample - mean) @ directions, (window_embeddings - mean) @ directions, permutations=permutations, rng=rng
        )
        tests.append(DriftTest("embedding_mmd", mmd, mmd_p, family_alpha))
    # Window first: "greater" is the alternative that its distribution function lies above, i.e. lower confidence.
    confidence = stats.ks_2samp(window_probabilities.max(1), reference_probabilities.max(1), alternative="greater")
    tests.append(DriftTest("confidence_ks", confidence.statistic, confidence.pvalue, family_alpha))
    return tuple(
        DriftTest(test.name, float(test.statistic), float(test.p_value), test.alpha, test.subject) for test in tests
    )
