"""Modality codes: PCA-reduce an item feature matrix, cluster it, link each item to its nearest centroids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

KMEANS_ITERATIONS = 50


@dataclass
class ModalityCodes:
    codes: np.ndarray  # int32 [n_items + 1, k]: code ids per item, -1 where the item lacks the modality
    centroids: np.ndarray  # float32 [n_codes, reduced_dim]: k-means centroids in the reduced space
    reduced: np.ndarray  # float32 [n_items + 1, reduced_dim]: each item's reduced features, 0 where it lacks them
    stats: dict


def fit_codes(
    features: np.ndarray,
    present: np.ndarray,
    fit_rows: np.ndarray,
    *,
    pca_dim: int,
    n_codes: int,
    codes_per_item: int,
    normalize: bool,
    seed: int,
) -> ModalityCodes:
    """Codes for every present item; PCA and k-means are fitted on `fit_rows` only.

    features: float32 [n_items + 1, dim], row 0 (padding) unused.
    present:  bool [n_items + 1], which items have this modality.
    fit_rows: bool [n_items + 1], the present items to fit on (all present items, or those seen in training).
    """
    x = features.astype(np.float64)
    if normalize:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    fit = x[fit_rows]
    if len(fit) < 2:
        raise ValueError(f"only {len(fit)} items to fit modality codes on")
    n_codes = min(n_codes, len(fit))
    dim = min(pca_dim, fit.shape[1], len(fit))
    pca = PCA(n_components=dim, random_state=seed).fit(fit)
    reduced = pca.transform(x[present]).astype(np.float32)
    # Lloyd's k-means from a random start, at most KMEANS_ITERATIONS rounds. With about 3 items per code, k-means++
    # seeding costs 20 times the rounds themselves, and mini-batches converge to worse codes: on Toys this takes
    # 0.5 s per modality at an inertia 12 % below MiniBatchKMeans with 3 k-means++ starts (18 s); more random
    # starts found no lower inertia there.
    kmeans = KMeans(n_clusters=n_codes, init="random", n_init=1, max_iter=KMEANS_ITERATIONS, random_state=seed)
    kmeans.fit(pca.transform(fit).astype(np.float32))
    centroids = kmeans.cluster_centers_.astype(np.float32)
    k = min(codes_per_item, n_codes)
    nearest = _nearest(reduced, centroids, k)
    codes = np.full((len(features), k), -1, dtype=np.int32)
    codes[present] = nearest
    reduced_all = np.zeros((len(features), dim), dtype=np.float32)
    reduced_all[present] = reduced
    sizes = np.bincount(nearest[:, 0], minlength=n_codes)
    stats = {
        "items_with_modality": int(present.sum()),
        "items_fitted": int(fit_rows.sum()),
        "n_codes": int(n_codes),
        "codes_per_item": int(k),
        "reduced_dim": int(dim),
        "pca_explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4),
        "kmeans_inertia": round(float(kmeans.inertia_), 4),
        "items_per_nearest_code": {
            "min": int(sizes.min()),
            "median": float(np.median(sizes)),
            "max": int(sizes.max()),
            "empty_codes": int((sizes == 0).sum()),
        },
    }
    return ModalityCodes(codes=codes, centroids=centroids, reduced=reduced_all, stats=stats)


def _nearest(x: np.ndarray, centroids: np.ndarray, k: int, rows: int = 4096) -> np.ndarray:
    """[n, k]: each row's k nearest centroids, nearest first (ties: the lower index); in blocks of `rows`, so that
    memory is rows x n_codes rather than n x n_codes."""
    nearest = np.empty((len(x), k), dtype=np.int64)
    squared = (centroids**2).sum(1)
    for start in range(0, len(x), rows):
        block = x[start : start + rows]
        dist = (block**2).sum(1, keepdims=True) - 2 * block @ centroids.T + squared  # squared distances
        if k == 1:
            nearest[start : start + rows, 0] = dist.argmin(1)
            continue
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]  # the k nearest, in no order
        part.sort(axis=1)  # so that equal distances keep the lower index first below
        order = np.argsort(np.take_along_axis(dist, part, 1), axis=1, kind="stable")
        nearest[start : start + rows] = np.take_along_axis(part, order, 1)
    return nearest
