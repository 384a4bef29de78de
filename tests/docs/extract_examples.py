#!/usr/bin/env python3
"""Writes every code block of docs/*.md marked as a complete program to OUT_DIR/NAME.cpp.

A block is marked by the line `<!-- complete program: ... -->` right before its ```cpp fence;
NAME is the markdown file's stem and the block's number in it (using-the-package_1.cpp). Prints
the written paths, one per line (tests/CMakeLists.txt builds and runs each). Files whose content
is unchanged are not rewritten, so that the build does not redo them."""

import re
import sys
from pathlib import Path

MARK = re.compile(r"^<!-- complete program:.*-->\s*$")


def blocks(text: str):
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if MARK.match(lines[i]):
            if i + 1 >= len(lines) or lines[i + 1].strip() != "```cpp":
                raise SystemExit(f"line {i + 1}: a complete-program mark must be followed by a ```cpp fence")
            j = i + 2
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            if j == len(lines):
                raise SystemExit(f"line {i + 2}: the ```cpp fence is not closed")
            yield "\n".join(lines[i + 2:j]) + "\n"
            i = j
        i += 1


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for md in sorted(sys.argv[2:]):
        path = Path(md)
        for n, code in enumerate(blocks(path.read_text(encoding="utf-8")), 1):
            target = out / f"{path.stem}_{n}.cpp"
            if not target.exists() or target.read_text(encoding="utf-8") != code:
                target.write_text(code, encoding="utf-8")
            print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
