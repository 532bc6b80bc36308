"""One worker process of tw_two_cpus: moves from tw_moves.py in the namespace it was started
in (`ip netns exec`), on the CPU its parent pinned it to. Prints the moves made as JSON.

    python3 -m scripts.lab.tw_worker --pattern genuine,linger0 --count 40
"""

from __future__ import annotations

import argparse
import json
import sys

from . import tw_moves


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m scripts.lab.tw_worker")
    ap.add_argument("--pattern", required=True, help="comma-separated moves of tw_moves.MOVES")
    ap.add_argument("--count", type=int, required=True)
    args = ap.parse_args(argv)
    names = args.pattern.split(",")
    unknown = [n for n in names if n not in tw_moves.MOVES]
    if unknown or args.count < 1:
        print(f"tw_worker: unknown moves {unknown} or count < 1", file=sys.stderr)
        return 2
    server = tw_moves.listener()
    try:
        done = tw_moves.run_moves([(n, server) for n in names], args.count, 10.0)
    finally:
        server.close()
    print(json.dumps(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
