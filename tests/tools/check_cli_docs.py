"""The README's op list and command-line reference against the program itself.

Usage: check_cli_docs.py CELLFLOW README.md

- Ops: the names in the README's op table (between "<!-- ops -->" and
  "<!-- /ops -->") against `cellflow ops --json` (built-ins only: no plugin path).
- Commands and flags: every command of `cellflow --help` (and the subcommands of
  each, recursively; hidden ones are not listed there) against the usage blocks
  of the README's "Command line" section (lines starting with "cellflow "), and
  every long flag of each command's `--help` against the flags of its usage
  lines.

Both directions: documented but missing, present but undocumented. Prints one
line per difference and exits 1 if there is any, 0 otherwise.
"""

import json
import os
import re
import subprocess
import sys

FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def run(cellflow, *args):
    env = {k: v for k, v in os.environ.items() if k != "CELLFLOW_PLUGIN_PATH"}
    out = subprocess.run([cellflow, *args], capture_output=True, text=True, env=env, timeout=60)
    if out.returncode != 0:
        sys.exit(f"{cellflow} {' '.join(args)}: exit {out.returncode}: {out.stderr.strip()}")
    return out.stdout


def help_sections(text):
    """{"Options": [lines], "Subcommands": [lines]} of a CLI11 help text."""
    sections, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^(\w[\w ]*):$", line)
        if m:
            current = sections.setdefault(m.group(1), [])
        elif current is not None and line.strip():
            current.append(line)
    return sections


def program_commands(cellflow, path=()):
    """{("cache", "ls"): {"--cache", ...}, ...}: every command with its long flags."""
    sections = help_sections(run(cellflow, *path, "--help"))
    out = {}
    if path:
        flags = set()
        for line in sections.get("Options", []):
            m = re.match(r"^\s+(?:-\w,)?(--[a-z][a-z0-9-]*)", line)
            if m and m.group(1) != "--help":
                flags.add(m.group(1))
        out[path] = flags
    for line in sections.get("Subcommands", []):
        m = re.match(r"^\s{2}(\S+)\s", line)
        if m:
            out.update(program_commands(cellflow, path + (m.group(1),)))
    return out


def section(text, heading):
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def documented_commands(readme, known):
    """{("cache", "ls"): {"--cache", ...}}: the usage lines of the Command line section.

    A usage line starts with "cellflow "; indented lines that follow continue it.
    The command is the longest run of words after "cellflow" that the program
    knows as a command (or, for a command the program lacks, the words before
    the first argument).
    """
    usages = []
    fence = None  # the language of the code block we are in ("" for none)
    for line in section(readme, "## Command line").splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
        elif fence == "" and line.startswith("cellflow "):
            usages.append(line)
        elif fence == "" and line.startswith(" ") and usages and line.strip():
            usages[-1] += " " + line.strip()
    out = {}
    for usage in usages:
        words = usage.split()[1:]
        command = ()
        for n in range(len(words), 0, -1):
            if tuple(words[:n]) in known:
                command = tuple(words[:n])
                break
        if not command:
            command = tuple(w for w in words[:2] if re.fullmatch(r"[a-z]+", w))[:2]
        out.setdefault(command, set()).update(FLAG.findall(usage))
    return out


def main():
    cellflow, readme_path = sys.argv[1], sys.argv[2]
    with open(readme_path, encoding="utf-8") as f:
        readme = f.read()
    problems = []

    # Ops.
    ops = {o["name"] for o in json.loads(run(cellflow, "ops", "--json"))["ops"]}
    m = re.search(r"<!-- ops -->(.*?)<!-- /ops -->", readme, flags=re.S)
    if m is None:
        problems.append(f"{readme_path}: no op table (between <!-- ops --> and <!-- /ops -->)")
        listed = set()
    else:
        # The first column of each row: one or more `name`s.
        listed = set()
        for row in re.findall(r"^\|([^|]*)\|", m.group(1), flags=re.M):
            listed.update(re.findall(r"`([^`]+)`", row))
    for name in sorted(listed - ops):
        problems.append(f"{readme_path}: op `{name}` is listed but `cellflow ops` has no such op")
    for name in sorted(ops - listed):
        problems.append(f"{readme_path}: op `{name}` (from `cellflow ops`) is not in the op table")

    # Commands and flags.
    program = program_commands(cellflow)
    # Command groups ("cache") have subcommands and no flags of their own.
    groups = {c[:-1] for c in program if len(c) > 1}
    documented = documented_commands(readme, set(program))
    for command in sorted(set(program) - groups):
        name = " ".join(("cellflow",) + command)
        if command not in documented:
            problems.append(f"{readme_path}: `{name}` has no usage line in the Command line section")
            continue
        for flag in sorted(program[command] - documented[command]):
            problems.append(f"{readme_path}: `{name} {flag}` is in --help but not documented")
        for flag in sorted(documented[command] - program[command]):
            problems.append(f"{readme_path}: `{name} {flag}` is documented but not in --help")
    for command in sorted(set(documented) - set(program)):
        problems.append(
            f"{readme_path}: `cellflow {' '.join(command)}` is documented but is no command"
        )

    for p in problems:
        print(p)
    print(
        f"{len(ops)} ops, {len(program) - len(groups)} commands, "
        f"{sum(len(f) for f in program.values())} flags checked: "
        f"{len(problems)} difference{'' if len(problems) == 1 else 's'}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
