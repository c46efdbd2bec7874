"""``splatdistill bench NAME [args]``: benchmarks that print measured figures.

Each benchmark lives in ``splatdistill.bench.<name>`` and exposes ``add_arguments(parser)`` and
``run(args) -> int``. Register new ones in ``BENCHMARKS``.
"""

from __future__ import annotations

import argparse
import importlib

from splatdistill.commands import lifter

BENCHMARKS = {
    "render": "splatdistill.bench.render",
    "upsample": "splatdistill.bench.upsample",
    "features": "splatdistill.bench.features",
    "step": "splatdistill.bench.step",
    "targets": "splatdistill.bench.targets",
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="run a benchmark and print its figures")
    bench_sub = parser.add_subparsers(dest="benchmark", metavar="NAME", required=True)
    for name, module_name in BENCHMARKS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # benchmark not written yet
                continue
            raise
        p = bench_sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    # lifting time per scene lives with the lifter commands (it runs the lifters end to end)
    p = bench_sub.add_parser("lifting", help=lifter.BENCH_HELP, description=lifter.BENCH_DESCRIPTION)
    lifter.add_bench_arguments(p)
    p.set_defaults(func=lifter.run_bench)
