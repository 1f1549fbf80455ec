"""A slow, loop-by-loop reference of HoliTom, written from the notes on the authors' code (no code shared with
framefusion.methods.holitom or clustering), with framefusion's budget apportionment and deterministic ties.

Everything is plain Python over lists of floats (float64); tensors only in and out.
"""

from __future__ import annotations

import math

import torch
from reference_dpc import density_peak_scores


def cosine(a, b):
    na = math.sqrt(sum(v * v for v in a))
    nb = math.sqrt(sum(v * v for v in b))
    return sum(x * y for x, y in zip(a, b)) / (max(na, 1e-12) * max(nb, 1e-12))


def distance(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def mean(rows):
    return [sum(col) / len(rows) for col in zip(*rows)]


def gains(sim, frames, patches, tau):
    """G[u][v] = (patches p with sim[i][p] > tau for all i in u..v-1) * (v - u)."""
    gain = [[0] * frames for _ in range(frames)]
    for u in range(frames):
        for v in range(u + 1, frames):
            count = sum(1 for p in range(patches) if all(sim[i][p] > tau for i in range(u, v)))
            gain[u][v] = count * (v - u)
    return gain


def dp_windows(gain, frames, max_window):
    """The authors' DP: dp[i] = max(dp[i-1], dp[i-w] + G[i-w+1][i]) for w = 2..min(i+1, max_window), strict >."""
    dp, prev = [0] * frames, [0] * frames
    for i in range(frames):
        best, best_start = (dp[i - 1] if i > 0 else 0), i
        for w in range(2, min(i + 1, max_window) + 1):
            j = i - w
            value = (dp[j] if j >= 0 else 0) + gain[j + 1][i]
            if value > best:
                best, best_start = value, j + 1
        dp[i], prev[i] = best, best_start
    windows, i = [], frames - 1
    while i >= 0:
        windows.append((prev[i], i))
        i = prev[i] - 1
    return windows[::-1], dp[frames - 1]


def largest_remainder(sizes, total):
    whole = max(sum(sizes), 1)
    counts = [s * total // whole for s in sizes]
    rema = [s * total % whole for s in sizes]
    left = total - sum(counts)
    order = sorted(range(len(sizes)), key=lambda g: (-rema[g], g))
    for g in order[:left]:
        counts[g] += 1
    return counts


def top_k(values, k):
    """Indices of the k largest values (ties to the lower index), ascending."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return sorted(order[:max(k, 0)])


def dpc_centres(x, count, knn):
    """DPC-kNN: the top `count` tokens by density-peak score rho * delta (tests/reference_dpc.py)."""
    return top_k(density_peak_scores(x, knn), count)


def cluster(x, count, knn, beta):
    """(into: centre index per token or -1, features per token) for tokens x (lists)."""
    n = len(x)
    if count <= 0:
        return [-1] * n, [list(r) for r in x]
    if count >= n:
        return list(range(n)), [list(r) for r in x]
    centres = dpc_centres(x, count, min(knn, count))
    into = list(range(n))
    for j in range(n):
        if j not in centres:
            into[j] = min(centres, key=lambda c: (distance(x[j], x[c]), c))
    out = [list(r) for r in x]
    for c in centres:
        members = [x[j] for j in range(n) if into[j] == c and j != c]
        if members:
            m = mean(members)
            out[c] = [beta * a + (1 - beta) * b for a, b in zip(x[c], m)]
    return into, out


def reference_holitom_video(features, budget, saliency, tau=0.8, beta=0.6, context_share=0.0, knn=7,
                            max_window=1024):
    """(keep [T*P] bool, features [T*P, D] float64, merged_into [T*P] long) of one video."""
    frames, patches, _ = features.shape
    n = frames * patches
    x = features.double().tolist()  # [T][P][D]
    sal = saliency.double().tolist()
    sim = [[cosine(x[i][p], x[i + 1][p]) for p in range(patches)] for i in range(frames - 1)]
    windows, reduced = dp_windows(gains(sim, frames, patches, tau), frames, max_window)
    target = min(max(round(budget * n), 1), n)
    out = [list(x[t][p]) for t in range(frames) for p in range(patches)]
    into = list(range(n))  # final owner of every token, -1 pruned
    static_of = []
    for u, v in windows:
        static_of.append([p for p in range(patches) if v > u and all(sim[i][p] > tau for i in range(u, v))])
    spare = target - (n - reduced)
    if spare >= 0:  # keep everything; split static patches into runs when the budget allows more
        caps = [v - u for (u, v), st in zip(windows, static_of) for _ in st]
        extra = largest_remainder(caps, spare) if spare > 0 else [0] * len(caps)
        g = 0
        for (u, v), st in zip(windows, static_of):
            width = v - u + 1
            for p in st:
                runs = extra[g] + 1
                g += 1
                for k in range(runs):
                    first, last = u + k * width // runs, u + (k + 1) * width // runs - 1
                    out[first * patches + p] = mean([x[f][p] for f in range(first, last + 1)])
                    for f in range(first, last + 1):
                        into[f * patches + p] = first * patches + p
    else:
        groups = []  # (token ids, features, static?)
        for (u, v), st in zip(windows, static_of):
            if st:
                groups.append(([u * patches + p for p in st], [mean([x[f][p] for f in range(u, v + 1)]) for p in st],
                               True))
                for f in range(u, v + 1):
                    for p in st:
                        into[f * patches + p] = u * patches + p
            dyn = [p for p in range(patches) if p not in st]
            for f in range(u, v + 1):
                if dyn:
                    groups.append(([f * patches + p for p in dyn], [x[f][p] for p in dyn], False))
        counts = largest_remainder([len(g[0]) for g in groups], target)
        owner = {}
        for (ids, feats, static), count in zip(groups, counts):
            if static:
                local, merged = cluster(feats, count, knn, beta)
                rest = list(range(len(ids)))
            else:
                dominant = round(count * (1 - context_share))
                top = top_k([sal[i // patches][i % patches] for i in ids], dominant)
                for t in top:
                    owner[ids[t]] = ids[t]
                rest = [j for j in range(len(ids)) if j not in top]
                local, merged = cluster([feats[j] for j in rest], count - dominant, knn, beta)
            for a, j in enumerate(rest):
                owner[ids[j]] = ids[rest[local[a]]] if local[a] >= 0 else -1
                out[ids[j]] = merged[a]
        for i in range(n):
            first = into[i]  # the temporal owner (itself when not merged in time)
            into[i] = owner[first]
    keep = [into[i] == i for i in range(n)]
    merged_into = [-1 if keep[i] else into[i] for i in range(n)]
    return torch.tensor(keep), torch.tensor(out, dtype=torch.float64), torch.tensor(merged_into)


def reference_inner_merge(importance, hidden, video, ratio):
    """Per video keep the round(n (1 - ratio)) (>= 1) most important tokens; merge each other one, ascending,
    into its most cosine-similar kept token with h_t <- (h_t + h_j) / 2. Returns (keep, hidden, merged_into)."""
    imp, h, vid = importance.double().tolist(), hidden.double().tolist(), video.tolist()
    n = len(imp)
    keep, into = [False] * n, [-1] * n
    out = [list(r) for r in h]
    for v in sorted(set(vid)):
        ids = [i for i in range(n) if vid[i] == v]
        count = max(1, round(len(ids) * (1 - ratio)))
        kept = [ids[j] for j in top_k([imp[i] for i in ids], count)]
        for i in kept:
            keep[i] = True
        for j in ids:
            if j in kept:
                continue
            t = max(kept, key=lambda c: (cosine(h[j], h[c]), -c))
            into[j] = t
            out[t] = [(a + b) / 2 for a, b in zip(out[t], h[j])]
    return torch.tensor(keep), torch.tensor(out, dtype=torch.float64), torch.tensor(into)
