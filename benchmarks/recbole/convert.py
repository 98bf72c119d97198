#!/usr/bin/env python3
"""Convert a gsau bundled dataset to RecBole's atomic-file format.

Input: a gsau sequence file (plain or gzip), one user per line,
``user item item ...`` with the items in chronological order and no
timestamps (e.g. src/gsau/data/bundled/Beauty.txt.gz).

Output: ``<out-dir>/<name>/<name>.inter`` with the header
``user_id:token<TAB>item_id:token<TAB>timestamp:float``. The timestamp is the
item's position in its user's sequence (0, 1, 2, ...), so RecBole's
time-ordered (``order: TO``) leave-one-out split sees exactly the file order:
the last item is the test target, the one before it the validation target.

Standard library only; run it with any Python 3.

    python3 benchmarks/recbole/convert.py --out-dir benchmarks/.recbole-data
    python3 benchmarks/recbole/convert.py --input path/to/Toys_and_Games.txt.gz \
        --name Toys_and_Games --out-dir benchmarks/.recbole-data
"""

import argparse
import gzip
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = os.path.normpath(os.path.join(HERE, "..", "..", "src", "gsau", "data", "bundled"))
HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def _open_text(path):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def convert(input_path, out_dir, name):
    """Write ``<out_dir>/<name>/<name>.inter``; return a small stats dict."""
    target_dir = os.path.join(out_dir, name)
    os.makedirs(target_dir, exist_ok=True)
    target = os.path.join(target_dir, name + ".inter")
    tmp = target + ".tmp"
    users = 0
    inters = 0
    items = set()
    seen_users = set()
    with _open_text(input_path) as src, open(tmp, "w", encoding="utf-8", newline="\n") as dst:
        dst.write(HEADER)
        for lineno, line in enumerate(src, 1):
            parts = line.split()
            if not parts:
                continue
            user, seq = parts[0], parts[1:]
            if user in seen_users:
                raise ValueError(f"{input_path}:{lineno}: user {user!r} appears twice")
            seen_users.add(user)
            users += 1
            for pos, item in enumerate(seq):
                dst.write(f"{user}\t{item}\t{pos}\n")
                items.add(item)
            inters += len(seq)
    os.replace(tmp, target)
    return {
        "path": target,
        "users": users,
        "items": len(items),
        "interactions": inters,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="Beauty", help="dataset name (RecBole's `dataset`); default Beauty")
    ap.add_argument(
        "--input",
        default=None,
        help="gsau sequence file; default src/gsau/data/bundled/<name>.txt.gz",
    )
    ap.add_argument("--out-dir", required=True, help="RecBole data_path; writes <out-dir>/<name>/<name>.inter")
    args = ap.parse_args(argv)
    input_path = args.input or os.path.join(BUNDLED, args.name + ".txt.gz")
    stats = convert(input_path, args.out_dir, args.name)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
