"""Strip outputs and execution counts from notebooks, in place, so that they are committed clean.

Usage: python scripts/clean_notebooks.py [NOTEBOOK ...]   (default: notebooks/*.ipynb)
       python scripts/clean_notebooks.py --check           (exit 1 if any notebook would change)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
VOLATILE_METADATA = ("execution", "collapsed", "scrolled")


def clean(nb: nbformat.NotebookNode) -> bool:
    """Remove outputs, execution counts and per-run cell metadata; True if anything changed."""
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
        for key in VOLATILE_METADATA:
            changed |= cell.metadata.pop(key, None) is not None
    changed |= nb.metadata.pop("widgets", None) is not None
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--check", action="store_true", help="only report notebooks that need cleaning")
    args = parser.parse_args(argv)
    dirty = 0
    for path in args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        changed = clean(nb)
        if changed and not args.check:
            nbformat.write(nb, path)
        dirty += changed
        print(f"{('dirty' if args.check else 'cleaned') if changed else 'clean':8}{path}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
