"""Connected regions of a boolean mask, as numba kernels over arrays (no scipy needed).

`label_mask` labels one strip of rows (two passes with a union-find, labels 1..n in raster
order of their first pixel); `join_nodes` joins the regions of neighbouring strips from the
pairs that touch across the edge; `region_stats` sums what a region's pixels hold. The
streaming over strips and the bookkeeping live in core/hotspots.py.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _find(parent, i):
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return root


@numba.njit(cache=True)
def _union(parent, a, b):
    ra, rb = _find(parent, a), _find(parent, b)
    # The smaller label stays the root, so a root is always met before its members.
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@numba.njit(cache=True)
def label_mask(mask, eight):
    """Labels (int32, 0 outside) of the 4- or 8-connected regions of a 2-D mask, and their count."""
    h, w = mask.shape
    labels = np.zeros((h, w), np.int32)
    # Each provisional label starts at a pixel with no labelled neighbour above or to the left:
    # at most one pixel in two (a checkerboard).
    parent = np.zeros((h * w + 1) // 2 + 2, np.int32)
    n = 0
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                continue
            best = 0
            for dy, dx in ((0, -1), (-1, 0), (-1, -1), (-1, 1)):
                if not eight and dx != 0 and dy != 0:
                    continue
                yy, xx = y + dy, x + dx
                if yy < 0 or xx < 0 or xx >= w:
                    continue
                other = labels[yy, xx]
                if other == 0:
                    continue
                if best == 0:
                    best = other
                elif other != best:
                    _union(parent, best, other)
            if best == 0:
                n += 1
                parent[n] = n
                best = n
            labels[y, x] = best
    remap = np.zeros(n + 1, np.int32)
    count = 0
    for i in range(1, n + 1):
        root = _find(parent, i)
        if root == i:
            count += 1
            remap[i] = count
        else:
            remap[i] = remap[root]
    for y in range(h):
        for x in range(w):
            labels[y, x] = remap[labels[y, x]]
    return labels, count


@numba.njit(cache=True)
def join_nodes(n_nodes, a, b):
    """Nodes 0..n_nodes-1 joined by the pairs (a[k], b[k]): each node's group (0..G-1), G."""
    parent = np.arange(n_nodes).astype(np.int64)
    for k in range(a.shape[0]):
        _union(parent, a[k], b[k])
    group = np.empty(n_nodes, np.int64)
    count = 0
    for i in range(n_nodes):
        root = _find(parent, i)
        if root == i:
            group[i] = count
            count += 1
        else:
            group[i] = group[root]
    return group, count


@numba.njit(cache=True)
def region_stats(labels, values, row_area, n):
    """Per label 1..n (index 0 unused): pixel count, sum and max of `values`, summed pixel area."""
    count = np.zeros(n + 1, np.int64)
    total = np.zeros(n + 1, np.float64)
    top = np.full(n + 1, -np.inf)
    area = np.zeros(n + 1, np.float64)
    h, w = labels.shape
    for y in range(h):
        for x in range(w):
            label = labels[y, x]
            if label == 0:
                continue
            v = values[y, x]
            count[label] += 1
            total[label] += v
            area[label] += row_area[y]
            if v > top[label]:
                top[label] = v
    return count, total, top, area
