#!/usr/bin/env python3
"""Writes the README's own-program example into a folder: the first ```cpp block of the section
"Writing your own training program" as train.cc, its first ```cmake block as CMakeLists.txt.
Usage: readme_example.py README.md OUT_DIR. Fails naming what is missing."""
import pathlib
import re
import sys

SECTION = "#### Writing your own training program"


def main(readme, out):
    text = pathlib.Path(readme).read_text()
    start = text.find(SECTION)
    if start < 0:
        sys.exit(f"{readme}: no '{SECTION}' section; the install test builds that example")
    end = text.find("\n### ", start)
    section = text[start:end if end >= 0 else len(text)]
    files = {"cpp": "train.cc", "cmake": "CMakeLists.txt"}
    for lang, name in files.items():
        m = re.search(r"^```" + lang + r"\n(.*?)^```", section, re.S | re.M)
        if not m:
            sys.exit(f"{readme}: the section '{SECTION}' has no ```{lang} block (for {name})")
        pathlib.Path(out, name).write_text(m.group(1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
