"""A slow, loop-by-loop DPC-kNN density-peak score (plain Python floats), the reference that the FastVID and HoliTom
references share, to check framefusion/methods/clustering.py through them. It shares no code with the package.
"""

from __future__ import annotations

import math

TIE_RAMP = 1e-6  # density tie-break: token j of n gets + 1e-6 * (n - j) / n (earlier tokens win exact ties)


def density_peak_scores(tokens, k):
    """rho * delta for each token (lists). rho = exp(-mean of the k smallest squared distances, itself included)
    plus the tie-break ramp; delta = distance to the nearest denser token (the largest distance of all for the
    densest); distances scaled by 1 / sqrt(dim)."""
    n, dim = len(tokens), len(tokens[0])
    dist = [[math.sqrt(sum((a - b) ** 2 for a, b in zip(tokens[i], tokens[j]))) / math.sqrt(dim) for j in range(n)]
            for i in range(n)]
    k = max(1, min(k, n))
    rho = []
    for i in range(n):
        nearest = sorted(dist[i])[:k]
        rho.append(math.exp(-sum(d * d for d in nearest) / k) + TIE_RAMP * (n - i) / n)
    scores = []
    for i in range(n):
        denser = [dist[i][j] for j in range(n) if rho[j] > rho[i]]
        delta = min(denser) if denser else max(max(row) for row in dist)
        scores.append(rho[i] * delta)
    return scores
