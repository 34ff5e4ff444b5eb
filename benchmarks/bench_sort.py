#!/usr/bin/env python
"""Row sorts as the unlearning step and the MIA features use them: torch.sort against
:func:`tru.eval.rank.argsort_rows_descending` / :func:`tru.eval.rank.sort_rows` (NumPy's SIMD sort on CPU),
side by side in one run, interleaved per round (the machine is shared and noisy).

    python benchmarks/bench_sort.py [--rows 600] [--items 1682 2819 8000] [--rounds 5] [--threads 1]

Prints per shape the median milliseconds of each and the ratio torch / tru; checks the two agree (the
same score at every rank; the same sorted values).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tru.eval.rank import argsort_rows_descending, sort_rows


def _ms(fn, x: torch.Tensor) -> float:
    t = time.perf_counter()
    fn(x)
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=600, help="users per step (MovieLens-100K 5 %%: ~600)")
    ap.add_argument("--items", type=int, nargs="+", default=[1682, 2819, 8000])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print("| rows × items | op | torch.sort ms | tru ms | torch / tru |")
    print("|---|---|---|---|---|")
    for n in args.items:
        x = torch.randn(args.rows, n, generator=gen)
        x[:, : n // 20] = -torch.inf  # masked (seen) items, as the step masks them
        order = argsort_rows_descending(x)
        ref = torch.sort(x, dim=1, descending=True).indices
        # the same score at every rank (float32 draws have a few exact ties, ordered either way)
        assert torch.equal(x.gather(1, order), x.gather(1, ref)), "argsort_rows_descending disagrees"
        assert torch.equal(sort_rows(x), torch.sort(x, dim=1).values), "sort_rows disagrees"
        ops = {
            "argsort desc": (
                lambda a: torch.sort(a, dim=1, descending=True).indices,
                argsort_rows_descending,
            ),
            "sort values": (lambda a: torch.sort(a, dim=1).values, sort_rows),
        }
        for name, (old, new) in ops.items():
            t_old, t_new = [], []
            for _ in range(args.rounds):
                t_old.append(_ms(old, x))
                t_new.append(_ms(new, x))
            a, b = statistics.median(t_old), statistics.median(t_new)
            print(f"| {args.rows} × {n} | {name} | {a:.1f} | {b:.1f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
