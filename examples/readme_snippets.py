#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Extract the C programs of README.md so that meson builds and runs them.

Usage: readme_snippets.py README.md OUTDIR NAME...

Every ```c block of the README must be a complete program, marked on the
line before it with <!-- readme-test: NAME -->. Each is written, byte for
byte as printed, to OUTDIR/readme_NAME.c. Fails (exit 1) if a ```c block
is unmarked, a name repeats, or the names found differ from the NAMEs
meson expects (examples/meson.build lists them: add a new block there).
"""
import os
import re
import sys


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    readme, outdir, want = argv[0], argv[1], argv[2:]
    with open(readme, encoding='utf-8') as f:
        lines = f.read().split('\n')
    found = {}
    errors = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith('```') and line.strip()[3:].strip() in ('c', 'C'):
            m = re.match(r'\s*<!--\s*readme-test:\s*([A-Za-z0-9_-]+)\s*-->\s*$',
                         lines[i - 1] if i > 0 else '')
            end = i + 1
            while end < len(lines) and lines[end].strip() != '```':
                end += 1
            if end == len(lines):
                errors.append('%s:%d: unterminated ```c block' % (readme, i + 1))
                break
            if m is None:
                errors.append('%s:%d: ```c block without <!-- readme-test: NAME --> '
                              'on the line before' % (readme, i + 1))
            elif m.group(1) in found:
                errors.append('%s:%d: readme-test name %s used twice' % (readme, i + 1, m.group(1)))
            else:
                found[m.group(1)] = '\n'.join(lines[i + 1:end]) + '\n'
            i = end + 1
            continue
        i += 1
    if sorted(found) != sorted(want):
        errors.append('README blocks %s, examples/meson.build expects %s: keep them in step'
                      % (sorted(found), sorted(want)))
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return 1
    for name, text in found.items():
        path = os.path.join(outdir, 'readme_%s.c' % name)
        with open(path, 'w', encoding='utf-8') as f:
            f.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
