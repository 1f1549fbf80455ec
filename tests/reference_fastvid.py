"""A slow, loop-by-loop FastVID for one video, written from the algorithm notes (Python lists and floats, double
precision), to check framefusion/methods/fastvid.py against. It shares no code with the package
(DPC-kNN from tests/reference_dpc.py).

It includes the package's deliberate choices so that the two can be compared exactly: the exact budget
(round(budget * T * P) tokens, at least one a frame; here by handing out one token at a time), the frame mean as
global feature, the density tie-break ramp of clustering.py (the densest token's delta: the largest distance
of the frame, as the authors'), and budget 1 = the unchanged video.
"""

from __future__ import annotations

import math

import torch
from reference_dpc import density_peak_scores


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def cosine(a, b):
    return dot(a, b) / (math.sqrt(dot(a, a)) * math.sqrt(dot(b, b)))


def mean_vector(vectors):
    return [sum(column) / len(vectors) for column in zip(*vectors)]


def segments(frames, min_segments, cut_threshold):
    """DySeg on a list of frames (each a list of token vectors) -> list of segments, each a list of frame indices."""
    means = [mean_vector(frame) for frame in frames]
    transitions = [cosine(means[i], means[i + 1]) for i in range(len(frames) - 1)]
    lowest = sorted(range(len(transitions)), key=lambda i: (transitions[i], i))[:min_segments - 1]
    cuts = {i for i in range(len(transitions)) if transitions[i] < cut_threshold or i in lowest}
    result, current = [], []
    for f in range(len(frames)):
        current.append(f)
        if f in cuts or f == len(frames) - 1:
            result.append(current)
            current = []
    return result


def hand_out(total, capacities):
    """Give `total` tokens one at a time to the slot holding the fewest (ties: the first) that still has room."""
    counts = [0] * len(capacities)
    for _ in range(total):
        open_slots = [i for i in range(len(capacities)) if counts[i] < capacities[i]]
        if not open_slots:
            break
        counts[min(open_slots, key=lambda i: (counts[i], i))] += 1
    return counts


def reference_fastvid(features, budget, saliency, min_segments=8, cut_threshold=0.9, context_ratio=0.4,
                      anchor_interval=4, context_weight=0.6):
    """features [T, P, D], saliency [T, P] tensors -> (keep list of T*P bools, features [T*P, D] float64 tensor,
    merged_into list of T*P ints)."""
    frames_count, patches, dim = features.shape
    frames = features.double().tolist()
    scores = saliency.double().tolist()
    new_features = [token for frame in frames for token in frame]
    total = frames_count * patches
    target = min(max(round(budget * total), frames_count), total)
    if target == total:
        return [True] * total, torch.tensor(new_features, dtype=torch.float64), [-1] * total

    kept = hand_out(target, [patches] * frames_count)
    salient_count = [n - math.floor(n * context_ratio) for n in kept]
    share = [math.floor(n * context_ratio) for n in kept]
    context_count = [0] * frames_count
    segs = segments(frames, min_segments, cut_threshold)
    anchors_of = {}
    for seg in segs:
        length = len(seg)
        anchors = [seg[i] for i in range(length) if (length - 1 - i) % anchor_interval == 0]
        anchors_of[tuple(seg)] = anchors
        last_first = list(reversed(anchors))
        seg_share = sum(share[f] for f in seg)
        given = hand_out(seg_share, [patches - salient_count[f] for f in last_first])
        for f, count in zip(last_first, given):
            context_count[f] = count
        extra = hand_out(seg_share - sum(given), [patches - salient_count[f] - context_count[f] for f in seg])
        for f, count in zip(seg, extra):
            salient_count[f] += count

    keep = [False] * total
    salient = [[False] * patches for _ in range(frames_count)]
    for f in range(frames_count):
        order = sorted(range(patches), key=lambda p: (-scores[f][p], p))
        for p in order[:salient_count[f]]:
            salient[f][p] = True
            keep[f * patches + p] = True

    merged_into = [-1] * total
    for seg in segs:
        for a in anchors_of[tuple(seg)]:
            if context_count[a] == 0:
                continue
            candidates = [a * patches + p for p in range(patches) if not salient[a][p]]
            density = density_peak_scores([frames[a][i - a * patches] for i in candidates], k=4)
            best = sorted(range(len(candidates)), key=lambda j: (-density[j], j))[:context_count[a]]
            centres = sorted(candidates[j] for j in best)
            if len(seg) == 1 or anchor_interval == 1:
                sources = candidates
            else:
                sources = [f * patches + p for f in seg for p in range(patches) if not salient[f][p]]
            token = lambda i: frames[i // patches][i % patches]  # noqa: E731
            members = {c: [] for c in centres}
            for s in sources:
                sims = [cosine(token(s), token(c)) for c in centres]
                chosen = centres[sims.index(max(sims))]
                members[chosen].append(s)
                if merged_into[s] < 0:
                    merged_into[s] = chosen
            for c in centres:
                size = len(members[c])
                w = max(1.0 / (size + 1), context_weight)
                mean = mean_vector([token(s) for s in members[c]]) if size else [0.0] * dim
                new_features[c] = [w * x + (1 - w) * m for x, m in zip(token(c), mean)]
                keep[c] = True
    for i in range(total):
        if keep[i]:
            merged_into[i] = -1
    return keep, torch.tensor(new_features, dtype=torch.float64), merged_into
