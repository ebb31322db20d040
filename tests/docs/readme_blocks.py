#!/usr/bin/env python3
"""Compiles every ```cpp block of a Markdown file (README.md) against tether.

    readme_blocks.py --cxx CXX... --source-root DIR --lib LIBTETHER [--flag F]...
                     [--expect-failures N] FILE.md

A block is a whole program unless the last non-blank line before its fence is a comment
that says otherwise:

    <!-- fragment -->               statements: wrapped into a function (a tether::task<void>
                                    if they co_await or co_return), compiled, not linked
    <!-- fragment: declarations --> namespace-scope declarations, compiled, not linked
    <!-- program: PATH -->          a whole program that must also be PATH's code (a file
                                    of the repository, less its leading // comment lines)

A fragment's leading #include lines stay at file scope. Fragments get
`#include <tether/tether.hpp>`, <cassert>, <string> and <chrono> first, and
`using namespace tether; using namespace std::chrono_literals;`. Programs get nothing: they
must compile and link as they are, as a reader would copy them. Errors point at the
Markdown file's lines (#line).

Exits 0 if every block compiled (or, with --expect-failures N, if exactly N did not: the
test of this script on a file with a broken block), 1 otherwise.
"""

import argparse
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile

PREAMBLE = """#include <tether/tether.hpp>

#include <cassert>
#include <chrono>
#include <string>

using namespace tether;
using namespace std::chrono_literals;
"""

MARKER = re.compile(r"^<!--\s*fragment(?::\s*(declarations))?\s*-->$")
SAME_AS = re.compile(r"^<!--\s*program:\s*(\S+)\s*-->$")


def blocks(text):
    """Yields (first line number, kind, code, same_as) for each ```cpp block; kind is
    "program", "fragment" or "declarations"; same_as is the file a program must be, or None."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```cpp":
            i += 1
            continue
        kind = "program"
        same_as = None
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j >= 0:
            m = MARKER.match(lines[j].strip())
            if m:
                kind = "declarations" if m.group(1) else "fragment"
            m = SAME_AS.match(lines[j].strip())
            if m:
                same_as = m.group(1)
        start = i + 2  # 1-based number of the block's first code line
        i += 1
        code = []
        while i < len(lines) and lines[i].strip() != "```":
            code.append(lines[i])
            i += 1
        i += 1
        yield start, kind, "\n".join(code) + "\n", same_as


def source_of(md, line, kind, code, index):
    if kind == "program":
        return '#line {} "{}"\n'.format(line, md) + code
    # A fragment's leading #include lines go before the wrapping, at file scope.
    lines = code.splitlines(keepends=True)
    n = 0
    while n < len(lines) and (not lines[n].strip() or lines[n].startswith("#include")):
        n += 1
    includes, body = "".join(lines[:n]), "".join(lines[n:])
    where = '#line {} "{}"\n'.format(line + n, md)
    head = PREAMBLE + includes + "\nnamespace readme_block_{} {{\n".format(index)
    if kind == "declarations":
        return head + where + body + "}\n"
    coro = "co_await" in body or "co_return" in body
    fn = "tether::task<void>" if coro else "[[maybe_unused]] void"
    return (head + "{} fragment() {{\n".format(fn) + where + body
            + ("co_return;\n" if coro else "") + "}\n}\n")


def differs_from(args, code, path):
    """Why `code` is not the code of the repository's file `path`; empty if it is."""
    try:
        with open(os.path.join(args.source_root, path)) as f:
            lines = f.read().splitlines()
    except OSError as e:
        return "can't read {}: {}".format(path, e)
    while lines and (lines[0].startswith("//") or not lines[0].strip()):
        lines.pop(0)
    if "\n".join(lines) + "\n" == code:
        return ""
    return "the block is not {} (less its leading comment); update one or the other".format(path)


def compile_block(args, tmp, md, index, line, kind, code):
    src = os.path.join(tmp, "block{}.cpp".format(index))
    with open(src, "w") as f:
        f.write(source_of(md, line, kind, code, index))
    cmd = list(args.cxx) + ["-std=c++20", "-I", args.source_root] + args.flag
    if kind == "program":
        lib_dir = os.path.dirname(os.path.abspath(args.lib))
        cmd += [src, "-o", os.path.join(tmp, "block{}".format(index)), args.lib,
                "-Wl,-rpath," + lib_dir, "-lfmt", "-luring", "-pthread"]
    else:
        cmd += ["-c", src, "-o", os.path.join(tmp, "block{}.o".format(index))]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode == 0, p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxx", nargs="+", required=True)
    ap.add_argument("--source-root", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--flag", action="append", default=[])
    ap.add_argument("--expect-failures", type=int, default=0)
    ap.add_argument("markdown")
    args = ap.parse_args()

    with open(args.markdown) as f:
        found = list(blocks(f.read()))
    if not found:
        print("{}: no ```cpp blocks".format(args.markdown))
        return 1
    md = os.path.relpath(args.markdown)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="readme-blocks-") as tmp:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            jobs = [pool.submit(compile_block, args, tmp, md, i, line, kind, code)
                    for i, (line, kind, code, _) in enumerate(found)]
            for (line, kind, code, same_as), job in zip(found, jobs):
                ok, out = job.result()
                why = differs_from(args, code, same_as) if same_as else ""
                if ok and why:
                    ok, out = False, why
                print("{}:{}: {} {}".format(md, line, kind, "compiles" if ok else "FAILS"))
                if not ok:
                    failed += 1
                    print(out)
    print("{} of {} blocks compiled".format(len(found) - failed, len(found)))
    if failed != args.expect_failures:
        if args.expect_failures:
            print("expected {} to fail".format(args.expect_failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
