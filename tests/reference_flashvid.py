"""A slow, loop-by-loop FlashVID vision-side stage for one video, written from the algorithm notes (Python lists and
floats, double precision), to check framefusion/methods/flashvid.py against. It shares no code with the package
(DPC-kNN from tests/reference_dpc.py).

It includes the package's deliberate choices so that the two can be compared exactly: a one-frame segment clusters
its unselected tokens only, a token is never picked twice, density ties go to the earlier token (the ramp of
reference_dpc.py), and for budget_rule "matched" the exact counts (round(R T P) tokens handed out one at a time,
at least one a frame; clusters: the ceilings, then one less for the frames that overshot most).
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


def first_argmax(values, allowed):
    """The first index of the largest of values[i] over the allowed indices."""
    best = None
    for i in allowed:
        if best is None or values[i] > values[best]:
            best = i
    return best


# ---- counts ---------------------------------------------------------------------------------------------------
def frame_counts(frames, patches, retention, alpha, rule, expansion=1.25):
    """(selected, context) per frame, lists of ints."""
    if rule == "authors":
        per_frame = min(math.ceil(patches * retention * expansion), patches)
        chosen = math.ceil(per_frame * alpha)
        return [chosen] * frames, [per_frame - chosen] * frames
    total = max(frames, min(round(retention * frames * patches), frames * patches))
    kept = [0] * frames
    for _ in range(total):  # one at a time to the frame holding the fewest (ties: the first)
        kept[min(range(frames), key=lambda f: (kept[f], f))] += 1
    chosen = [min(k, math.ceil(round(k * alpha, 9))) for k in kept]
    return chosen, [k - c for k, c in zip(kept, chosen)]


def clusters_per_frame(trees, total, rule):
    """Context tokens of a segment shared over its frames' tree counts; None: keep every tree."""
    n = sum(trees)
    if total >= n:
        return None
    if rule == "authors":
        return [math.ceil(t * (total / n)) for t in trees]
    from fractions import Fraction

    quota = [Fraction(t * total, n) for t in trees]
    counts = [math.ceil(q) for q in quota]
    while sum(counts) > total:  # one less for the frame that overshot most among those keeping more than one
        candidates = [f for f in range(len(trees)) if counts[f] > quota[f]]
        f = max(candidates, key=lambda f: (counts[f] > 1, counts[f] - quota[f], f))
        quota[f] = counts[f] - 1  # it gave one up: no longer overshooting
        counts[f] -= 1
    return counts


# ---- stages ---------------------------------------------------------------------------------------------------
def segments(frames, min_segments, threshold):
    """Lists of frame indices: cut below the threshold and at the lowest transitions until min_segments."""
    means = [mean_vector(frame) for frame in frames]
    transitions = [cosine(means[i], means[i + 1]) for i in range(len(frames) - 1)]
    lowest = sorted(range(len(transitions)), key=lambda i: (transitions[i], i))[:min_segments - 1]
    cuts = {i for i in range(len(transitions)) if transitions[i] < threshold or i in lowest}
    result, current = [], []
    for f in range(len(frames)):
        current.append(f)
        if f in cuts or f == len(frames) - 1:
            result.append(current)
            current = []
    return result


def pick_tokens(frame, weights, count):
    """Greedy farthest-point picks of one frame's tokens under the distance (1 - cos) * weight of the column."""
    p = len(frame)
    distance = [[(1.0 - cosine(frame[i], frame[n])) * weights[n] if i != n else 0.0 for n in range(p)]
                for i in range(p)]
    picked = []
    for step in range(count):
        if step == 0:
            score = [sorted(distance[i][n] for i in range(p))[1] if p > 1 else 0.0 for n in range(p)]
        else:
            score = [min(distance[i][n] for i in picked) for n in range(p)]
        picked.append(first_argmax(score, [n for n in range(p) if n not in picked]))
    return set(picked)


def select(frames, saliency, counts, segment_list, selection):
    """Per frame, the set of selected token indices."""
    chosen = []
    for segment in segment_list:
        pooled = [mean_vector(frames[c]) for c in segment]
        for f in segment:
            p = len(frames[f])
            if selection == "attn":
                order = sorted(range(p), key=lambda n: (-saliency[f][n], n))
                chosen.append(set(order[:counts[f]]))
                continue
            weights = [1.0] * p
            if selection in ("attn_div", "attn_div_v2"):
                weights = [saliency[f][n] * 1e6 for n in range(p)]
            if selection == "attn_div_v2":
                weights = [w * sum(dot(frames[f][n], q) for q in pooled) / len(pooled) for n, w in enumerate(weights)]
            chosen.append(pick_tokens(frames[f], weights, counts[f]))
    return chosen


def trees_of_segment(frames, free, threshold, lower_bound):
    """Root (frame, token) of every (frame, token) of a segment: links to the most similar free token of the frame
    before, merged above the (maybe lowered) threshold."""
    s, p = len(frames), len(frames[0])
    best = [[-1.0] * p for _ in range(s)]
    parent = [[0] * p for _ in range(s)]
    for t in range(1, s):
        for n in range(p):
            if not free[t][n]:
                continue
            sims = [cosine(frames[t][n], frames[t - 1][m]) if free[t - 1][m] else -1.0 for m in range(p)]
            parent[t][n] = first_argmax(sims, range(p))
            best[t][n] = sims[parent[t][n]]
    cut = threshold
    if sum(1 for t in range(s) for n in range(p) if not best[t][n] > threshold) < lower_bound:
        k = s * p - lower_bound
        cut = max(sorted((v for row in best for v in row), reverse=True)[k - 1], -1.0 + 1e-6) if k > 0 else math.inf
    root, children = {}, {}
    for t in range(s):
        for n in range(p):
            merged = best[t][n] > cut
            root[(t, n)] = root[(t - 1, parent[t][n])] if merged else (t, n)
            if merged:
                children[(t - 1, parent[t][n])] = children.get((t - 1, parent[t][n]), 0) + 1
    return root, children


def reference_flashvid_video(features, saliency, budget, rule="matched", selection="attn_div", alpha=0.7,
                             temporal_threshold=0.8, segment_threshold=0.9, min_segments=4, expansion=1.25,
                             tree_weights=None):
    """features [T, P, D], saliency [T, P] tensors -> (keep list of T*P bools, features [T*P, D] float64 tensor,
    merged_into list of T*P ints); budget is the outer retention. A tree's token: the mean of its members, or with
    tree_weights "authors" (the default under rule "authors") their sum over 1 + the root's direct children."""
    tree_weights = tree_weights or ("authors" if rule == "authors" else "mean")
    frames = features.double().tolist()
    sal = saliency.double().tolist()
    t_count, p = len(frames), len(frames[0])
    selected, context = frame_counts(t_count, p, budget, alpha, rule, expansion)
    flat = features.double().reshape(t_count * p, -1).clone()
    if sum(selected) + sum(context) >= t_count * p:
        return [True] * (t_count * p), flat, [-1] * (t_count * p)
    segment_list = segments(frames, min_segments, segment_threshold)
    chosen = select(frames, sal, selected, segment_list, selection)
    keep = [n in chosen[f] for f in range(t_count) for n in range(p)]
    merged_into = [-1] * (t_count * p)
    for segment in segment_list:
        total = sum(context[f] for f in segment)
        if total == 0:
            continue
        seg_frames = [frames[f] for f in segment]
        free = [[n not in chosen[f] for n in range(p)] for f in segment]
        root, children = trees_of_segment(seg_frames, free, temporal_threshold,
                                          sum(selected[f] + context[f] for f in segment))
        members = {}
        for (t, n), r in root.items():
            if free[t][n]:
                members.setdefault(r, []).append((t, n))
        tree_mean = {}
        for r, m in members.items():
            summed = [sum(column) for column in zip(*[seg_frames[t][n] for t, n in m])]
            size = len(m) if tree_weights == "mean" else 1 + children.get(r, 0)
            tree_mean[r] = [v / size for v in summed]
        trees = [sorted(r for r in members if r[0] == t) for t in range(len(segment))]
        counts = clusters_per_frame([len(r) for r in trees], total, rule)
        owner = {}
        for t, roots in enumerate(trees):
            if counts is None or counts[t] >= len(roots):
                for r in roots:
                    owner[r] = (r, tree_mean[r])
                continue
            if counts[t] == 0:
                continue
            vectors = [tree_mean[r] for r in roots]
            score = density_peak_scores(vectors, min(counts[t], 7))
            centres = sorted(sorted(range(len(roots)), key=lambda i: (-score[i], i))[:counts[t]])
            join = {}
            for i in range(len(roots)):
                dists = [math.dist(vectors[i], vectors[c]) for c in centres]
                join[i] = i if i in centres else centres[min(range(len(centres)), key=lambda j: (dists[j], j))]
            for c in centres:
                group = [vectors[i] for i in range(len(roots)) if join[i] == c]
                for i in range(len(roots)):
                    if join[i] == c:
                        owner[roots[i]] = (roots[c], mean_vector(group))
        for (t, n), r in root.items():
            if not free[t][n] or r not in owner:
                continue
            (ct, cn), state = owner[r]
            kept = segment[ct] * p + cn
            index = segment[t] * p + n
            keep[kept] = True
            flat[kept] = torch.tensor(state, dtype=torch.float64)
            if index != kept:
                merged_into[index] = kept
    return keep, flat, merged_into
