#!/usr/bin/env python3
"""Check the library's layering on its object files.

Builds the graph between source files from the objects' defined and undefined global symbols
(nm): file a -> file b when a's object uses a symbol b's object defines. Each source file belongs
to the layer of its folder (--layers, lowest first). Fails on an edge from a lower layer to a
higher one, on a cycle between source files (in one layer or across), and on an object it cannot
map to a source file in a listed folder.

  check_layers.py --root SRC --layers src/core,solvers,... --sources FILE... --archives LIB.a...

Object names in a static library are meson's: the source path relative to the directory of the
meson.build that made the target, with '/' as '_', plus '.o'; each is matched to the --sources
file whose mangled path ends with it (at a '_'), and must match exactly one.
"""
import argparse
import os
import subprocess
import sys
from collections import defaultdict


def nm_archive(path):
    """{member: (defined set, undefined set)} of the global symbols of each object in path."""
    out = subprocess.run(['nm', '-g', path], capture_output=True, text=True, check=True).stdout
    objs, cur = {}, None
    for line in out.splitlines():
        if not line.strip():
            continue
        if line.endswith(':'):
            cur = line[:-1]
            objs[cur] = (set(), set())
            continue
        parts = line.split()
        if cur is None:
            continue
        if len(parts) == 2 and parts[0] in ('U', 'w', 'v'):
            objs[cur][1].add(parts[1])
        elif len(parts) == 3 and parts[1] not in ('U', 'w', 'v'):
            objs[cur][0].add(parts[2])
    return objs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--root', required=True)
    ap.add_argument('--layers', required=True)
    ap.add_argument('--sources', nargs='+', required=True)
    ap.add_argument('--archives', nargs='+', required=True)
    a = ap.parse_args()
    layers = a.layers.split(',')
    rank = {l: i for i, l in enumerate(layers)}
    root = os.path.realpath(a.root)
    srcs = [os.path.relpath(os.path.realpath(s), root) for s in a.sources]

    errors = []

    def layer_of(src):
        return os.path.dirname(src) if os.path.dirname(src) in rank else None

    for s in srcs:
        if layer_of(s) is None:
            errors.append(f'{s}: not in a listed layer folder ({", ".join(layers)})')

    defs, uses = {}, {}
    for ar in a.archives:
        for member, (d, u) in nm_archive(ar).items():
            obj = os.path.basename(member)  # thin archives name members by path
            cand = [s for s in srcs
                    if ('_' + s.replace('/', '_') + '.o').endswith('_' + obj)]
            if len(cand) != 1:
                errors.append(f'{ar}: object {member} matches {len(cand)} sources: {cand}')
                continue
            src = cand[0]
            uses[src] = u
            for sym in d:
                if sym in defs and defs[sym] != src:
                    errors.append(f'{sym} defined in both {defs[sym]} and {src}')
                defs[sym] = src
    missing = [s for s in srcs if s not in uses]
    if missing:
        errors.append(f'no object for {missing}')

    graph = defaultdict(dict)  # a -> {b: [symbols]}
    for a_src, u in uses.items():
        for sym in sorted(u):
            b_src = defs.get(sym)
            if b_src and b_src != a_src:
                graph[a_src].setdefault(b_src, []).append(sym)

    n_edges = 0
    for a_src in sorted(graph):
        for b_src, syms in sorted(graph[a_src].items()):
            n_edges += 1
            la, lb = layer_of(a_src), layer_of(b_src)
            if la and lb and rank[la] < rank[lb]:
                errors.append(f'upward edge: {a_src} ({la}) uses {", ".join(syms[:4])} of '
                              f'{b_src} ({lb})')

    # Cycles: strongly connected components of more than one file (Tarjan, iterative).
    index, low, on, stack, sccs, counter = {}, {}, set(), [], [], [0]
    nodes = sorted(set(uses) | {b for m in graph.values() for b in m})
    for v0 in nodes:
        if v0 in index:
            continue
        work = [(v0, iter(sorted(graph[v0])))]
        index[v0] = low[v0] = counter[0]; counter[0] += 1
        stack.append(v0); on.add(v0)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1
                    stack.append(w); on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop(); on.discard(w); comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    sccs.append(sorted(comp))
    for comp in sccs:
        inside = [f'{x} -> {y} ({", ".join(graph[x][y][:2])})'
                  for x in comp for y in sorted(graph[x]) if y in comp]
        errors.append('cycle between ' + ', '.join(comp) + ':\n    ' + '\n    '.join(inside))

    if errors:
        print('\n'.join(errors))
        return 1
    print(f'{len(uses)} source files in {len(layers)} layers, {n_edges} edges: '
          'no cycle, no upward edge')
    return 0


if __name__ == '__main__':
    sys.exit(main())
