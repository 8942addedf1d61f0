#!/usr/bin/env python3
"""Check that every edgeplan command the docs show still parses, and that
every relative link in them leads somewhere.

    scripts/doc_commands.py BINARY [FILES...]   (default: README.md docs/*.md)

Finds, in fenced code blocks, each command line that runs edgeplan
(`edgeplan ...`, `cargo run [--release] -- ...`, `target/*/edgeplan ...`,
continuation lines joined), and asks the binary: the subcommand (and its
nested subcommand) must exist, and every `--flag` must be one its `--help`
lists. Each relative link (`[text](path#anchor)`) must name a file that
exists and, with an anchor into a Markdown file, a heading there. Exits
non-zero naming the file, line and what no longer exists.
Runs in seconds; `.ci/run` calls it after the tests built the binary.
"""

import glob
import re
import subprocess
import sys

RUNS = re.compile(
    r"^(?:\$ )?(?:edgeplan|cargo run(?: --release)?(?: --bin edgeplan)? --|(?:\./)?target/(?:debug|release)/edgeplan)\s+(-.*|[a-z][a-z-]*(?:\s.*)?)$"
)
help_cache = {}


def help_of(binary, path):
    key = tuple(path)
    if key not in help_cache:
        out = subprocess.run(
            [binary, *path, "--help"], capture_output=True, text=True, check=False
        )
        help_cache[key] = out.stdout if out.returncode == 0 else None
    return help_cache[key]


def subcommands(help_text):
    names, inside = set(), False
    for line in help_text.splitlines():
        if line.startswith("Commands:"):
            inside = True
            continue
        if inside:
            if not line.startswith("  "):
                break
            names.add(line.split()[0])
    return names


def commands(path):
    """(line number, argument text) of each edgeplan command in code blocks."""
    found, fence, pending, start = [], False, "", 0
    for no, line in enumerate(open(path, encoding="utf-8"), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            pending = ""
            continue
        if not fence:
            # Inline: `edgeplan solve --instance F` in prose and tables.
            for args in re.findall(r"`edgeplan ([a-z][^`]*)`", line):
                found.append((no, args.replace("[", " ").replace("]", " ").replace("\\|", " ")))
            continue
        text = line.rstrip("\n")
        if pending:
            text = pending + " " + text.strip()
        else:
            start = no
        if text.endswith("\\"):
            pending = text[:-1].rstrip()
            continue
        pending = ""
        stripped = text.strip()
        if stripped.startswith("#"):
            continue
        # A command may follow `&&`, `;` or a variable assignment.
        for part in re.split(r"&&|;|\|", stripped):
            part = part.strip()
            part = re.sub(r"^(?:[A-Z_]+=\S+\s+)+", "", part)
            m = RUNS.match(part)
            if m:
                found.append((start, m.group(1)))
    return found


def check(binary, path):
    problems = []
    for no, args in commands(path):
        words = [w for w in args.split() if not w.startswith("#")]
        args_only = []
        for w in words:
            if w.startswith("#") or w in ("&", ">", "2>&1", ">>"):
                break
            args_only.append(w)
        if not args_only:
            continue
        sub = [args_only[0]]
        top = help_of(binary, [])
        if sub[0].startswith("-"):
            continue  # `edgeplan --help` and the like
        if sub[0] not in subcommands(top or ""):
            problems.append(f"{path}:{no}: no subcommand `{sub[0]}`")
            continue
        h = help_of(binary, sub)
        if len(args_only) > 1 and args_only[1] in subcommands(h or ""):
            sub.append(args_only[1])
            h = help_of(binary, sub)
        for w in args_only[len(sub):]:
            if not w.startswith("--"):
                continue
            flag = re.split(r"[=,.;:)]", w, maxsplit=1)[0]
            if flag in ("--help", "--version"):
                continue
            if not re.search(r"(^|[\s,])" + re.escape(flag) + r"([\s=<\[]|$)", h or "", re.M):
                problems.append(f"{path}:{no}: `edgeplan {' '.join(sub)}` has no {flag}")
    return problems


def slug(title):
    s = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return s.replace(" ", "-")


def anchors(path):
    found, fence = set(), False
    for line in open(path, encoding="utf-8"):
        if line.lstrip().startswith("```"):
            fence = not fence
        m = re.match(r"^#{1,6} (.*)$", line)
        if m and not fence:
            found.add(slug(m.group(1)))
    return found


def links(path):
    """Broken relative links of a Markdown file."""
    import os

    problems, fence = [], False
    base = os.path.dirname(path)
    for no, line in enumerate(open(path, encoding="utf-8"), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
        if fence:
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"^(https?:|mailto:)", target):
                continue
            file, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(base, file)) if file else path
            if not os.path.exists(dest):
                problems.append(f"{path}:{no}: link to {target}: no {dest}")
            elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                problems.append(f"{path}:{no}: link to {target}: no heading #{anchor}")
    return problems


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = sys.argv[1]
    files = sys.argv[2:] or ["README.md", "ARCHITECTURE.md", *sorted(glob.glob("docs/*.md"))]
    problems, total = [], 0
    for f in files:
        total += len(commands(f))
        problems += check(binary, f)
        problems += links(f)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"docs: {total} edgeplan commands and the links of {len(files)} files, {len(problems)} out of date")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
