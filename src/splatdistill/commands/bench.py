"""``splatdistill bench NAME [args]``: benchmarks that print measured figures.

Each benchmark lives in ``splatdistill.bench.<name>`` and exposes ``add_arguments(parser)`` and
``run(args) -> int``. Register new ones in ``BENCHMARKS``.
"""

from __future__ import annotations

import argparse
import importlib

from splatdistill.commands import lifter

#: name -> (module, one-line help); the module is imported only when its benchmark runs (they load torch
#: and the pipeline, which every other command, ``--version`` included, must not pay for)
BENCHMARKS = {
    "render": ("splatdistill.bench.render", "feature splatting: two context views rendered into a target view"),
    "upsample": ("splatdistill.bench.upsample", "mask-aware upsampling and semantic blending: vectorised vs a loop"),
    "features": ("splatdistill.bench.features", "patch-feature time per image for a backbone"),
    "step": ("splatdistill.bench.step", "seconds per Splat-and-Distill training step, split by phase"),
    "targets": ("splatdistill.bench.targets", "self-render identity of the teacher targets"),
    "precision": ("splatdistill.bench.precision", "the same training in fp32 and bf16: losses, agreement, time"),
    "gpu": (
        "splatdistill.bench.gpu",
        "the prepared GPU check: every GPU figure into one markdown file (--cpu: dry run)",
    ),
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="run a benchmark and print its figures")
    bench_sub = parser.add_subparsers(dest="benchmark", metavar="NAME", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        # every argument (--help included) goes to the benchmark's own parser, built when it runs
        p = bench_sub.add_parser(name, help=help_text, add_help=False, prefix_chars="\0")
        p.add_argument("bench_args", nargs="*")
        p.set_defaults(func=_lazy_runner(name, module_name, help_text))
    # lifting time per scene lives with the lifter commands (it runs the lifters end to end)
    p = bench_sub.add_parser("lifting", help=lifter.BENCH_HELP, description=lifter.BENCH_DESCRIPTION)
    lifter.add_bench_arguments(p)
    p.set_defaults(func=lifter.run_bench)


def _lazy_runner(name: str, module_name: str, help_text: str):
    def run(args: argparse.Namespace) -> int:
        module = importlib.import_module(module_name)
        p = argparse.ArgumentParser(prog=f"splatdistill bench {name}", description=module.__doc__ or help_text)
        module.add_arguments(p)
        inner = p.parse_args(args.bench_args)
        inner.command = args.command
        return module.run(inner)

    return run
