#!/usr/bin/env python3
"""The structure read: edgeplan's module import graph (from `crate::…` and,
inside the service, `super::…` paths) must have no cycle, and nothing
outside the shell (service, api, main) may import the service.

    python3 scripts/structure.py [SRC_DIR]     (exit 1 on a finding)
"""
import os, re, sys, itertools
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
def modname(path):
    rel = os.path.relpath(path, root)[:-3]
    parts = rel.split('/')
    if parts[-1] in ('mod', 'lib', 'main'): parts = parts[:-1]
    if not parts: return None
    if parts[0] in ('service', 'api', 'fast') and len(parts) > 1:
        return '::'.join(parts[:2]) if parts[0] == 'service' else parts[0]
    return parts[0]
edges = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p = os.path.join(dp, f); m = modname(p)
        if m is None: continue
        text = open(p).read()
        for t in re.findall(r'crate::([a-z_]+)(?:::([a-z_]+))?', text):
            tgt = t[0] if t[0] != 'service' or not t[1] else f'service::{t[1]}'
            if tgt != m and not (tgt == 'service' and m.startswith('service')):
                edges.setdefault(m, set()).add(tgt)
        if m.startswith('service'):
            for t in re.findall(r'super::([a-z_]+)', text):
                tgt = f'service::{t}'
                if tgt != m: edges.setdefault(m, set()).add(tgt)
nodes = set(edges) | {t for v in edges.values() for t in v}
# cycles of length 2 and SCCs
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
for v in sorted(nodes):
    if v not in idx: sc(v)
for comp in sccs:
    print('cycle among:', ', '.join(comp))
    for a in comp:
        for b in sorted(edges.get(a, ())):
            if b in comp: print(f'  {a} -> {b}')
shell = lambda m: m.startswith('service') or m in ('api',)
upward = sorted((a, b) for a, bs in edges.items() for b in bs
                if b.startswith('service') and not shell(a))
for a, b in upward:
    print(f'core module {a} imports the shell: {a} -> {b}')
print(f'structure: {len(sccs)} cycle(s), {len(upward)} core-to-shell import(s) over {len(nodes)} modules')
sys.exit(1 if sccs or upward else 0)
