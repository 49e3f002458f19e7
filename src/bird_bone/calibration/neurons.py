"""Per-neuron statistics of an MLP from its calibration inputs: each neuron's expected
contribution and its k-means cluster by activation pattern (cluster-aware structured pruning
and activation logging both read them). k-means is scikit-learn's."""

from __future__ import annotations

import torch


def neuron_values(down_weight: torch.Tensor, abs_mean: torch.Tensor) -> torch.Tensor:
    """mean|a_j| * ||W_down[:, j]||_2 for each neuron j; ``down_weight`` is [hidden, neurons]."""
    return abs_mean.float() * down_weight.detach().float().norm(dim=0)


def cluster_neurons(patterns: torch.Tensor, clusters: int, seed: int = 0) -> torch.Tensor:
    """k-means cluster id of each neuron from its activation pattern [neurons, tokens]."""
    from sklearn.cluster import KMeans

    clusters = min(clusters, patterns.shape[0])
    features = torch.nn.functional.normalize(patterns.float(), dim=1).cpu().numpy()  # scikit-learn: host memory
    labels = KMeans(n_clusters=clusters, n_init=3, random_state=seed).fit_predict(features)
    return torch.as_tensor(labels, dtype=torch.long)
