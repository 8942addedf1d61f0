#!/usr/bin/env python3
"""The structure read, in three parts (exit 1 on a finding):

1. Inside each crate under crates/ (and the binary's src/), the module
   import graph (`crate::…` paths, `crate::{a::…, b::…}` groups and, in
   top-level modules, `super::…`) has no cycle. Between crates Cargo
   already forbids cycles.
2. The pure core's crates, and the `edgeplan` facade without its `service`
   feature, do not depend (directly or through anything) on the shell's
   runtime: tokio, tonic, redb, postgres, NATS, polars, plotters. Read from
   `cargo tree`, so it is the real dependency graph, not prose.
3. Each core crate depends directly only on the crates below it (LAYERS).

    python3 scripts/structure.py
"""
import os, re, subprocess, sys

CORE = ['model', 'physics', 'problem', 'solve', 'plan', 'verify', 'telemetry', 'analysis']
SHELL_RUNTIME = ['tokio', 'tonic', 'redb', 'postgres', 'tokio-postgres', 'async-nats',
                 'polars', 'plotters', 'hyper']
# Which crates a crate may depend on: the layering in ARCHITECTURE.md. A
# new arrow is a design change, made here on purpose.
LAYERS = {
    'model': [],
    'physics': ['model'],
    'verify': ['model'],
    'problem': ['model', 'physics'],
    'solve': ['model', 'problem'],
    'plan': ['model', 'physics', 'problem'],
    'telemetry': ['model', 'physics', 'problem'],
    'analysis': ['model', 'physics', 'problem', 'solve', 'plan', 'telemetry'],
}
sys.setrecursionlimit(10000)
findings = 0

def module_of(root, path):
    parts = os.path.relpath(path, root)[:-3].split('/')
    if parts[-1] in ('mod', 'lib', 'main'):
        parts = parts[:-1]
    return parts[0] if parts else None

def cycles(root):
    edges = {}
    for dp, _, fs in os.walk(root):
        for f in fs:
            if not f.endswith('.rs'):
                continue
            p = os.path.join(dp, f)
            m = module_of(root, p)
            if m is None:
                continue
            text = open(p).read()
            refs = re.findall(r'\bcrate::([a-z_]+)', text)
            for group in re.findall(r'\bcrate::\{([^}]*)\}', text):
                refs += re.findall(r'(?:^|,)\s*([a-z_]+)', group)
            if os.path.dirname(p) == root:  # top-level module: super:: is the root
                refs += re.findall(r'\bsuper::([a-z_]+)', text)
            for t in refs:
                if t != m and os.path.exists(os.path.join(root, t + '.rs')) or \
                        os.path.isdir(os.path.join(root, t)) and t != m:
                    edges.setdefault(m, set()).add(t)
    idx, low, st, on, sccs, c = {}, {}, [], set(), [], [0]
    def sc(v):
        idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in idx:
                sc(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))
    nodes = set(edges) | {t for v in edges.values() for t in v}
    for v in sorted(nodes):
        if v not in idx:
            sc(v)
    for comp in sccs:
        print(f'{root}: cycle among:', ', '.join(comp))
        for a in comp:
            for b in sorted(edges.get(a, ())):
                if b in comp:
                    print(f'  {a} -> {b}')
    return len(sccs), len(nodes)

roots = sorted(f'crates/{c}/src' for c in os.listdir('crates')) + ['src']
total_cycles = total_modules = 0
for r in roots:
    n, m = cycles(r)
    total_cycles += n; total_modules += m
findings += total_cycles

def tree(args, depth=None):
    extra = ['--depth', str(depth)] if depth is not None else []
    out = subprocess.run(['cargo', 'tree', '-q', '-e', 'normal', '--prefix', 'none',
                          '--format', '{p}'] + extra + args,
                         capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}

def check_runtime(label, deps):
    global findings
    bad = sorted(d for d in deps if d in SHELL_RUNTIME)
    if bad:
        findings += 1
        print(f'{label} depends on the shell runtime: {", ".join(bad)}')

for c in CORE:
    deps = tree(['-p', f'edgeplan-{c}'])
    check_runtime(f'edgeplan-{c}', deps)
    direct = tree(['-p', f'edgeplan-{c}'], depth=1)
    ours = sorted(d[len('edgeplan-'):] for d in direct if d.startswith('edgeplan-') and d != f'edgeplan-{c}')
    extra = [d for d in ours if d not in LAYERS[c]]
    if extra:
        findings += 1
        print(f'edgeplan-{c} depends on {", ".join(extra)} (allowed: {", ".join(LAYERS[c]) or "none"})')
check_runtime('edgeplan --no-default-features', tree(['-p', 'edgeplan', '--no-default-features']))

print(f'structure: {total_cycles} module cycle(s) over {total_modules} modules in {len(roots)} crates; '
      f'pure core ({len(CORE)} crates) checked against the shell runtime; {findings} finding(s)')
sys.exit(1 if findings else 0)
