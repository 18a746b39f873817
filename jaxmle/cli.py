"""The ``jaxmle`` command line: ``jaxmle demo`` runs the textbook showcase."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxmle",
        description="Maximum-likelihood fitting for JAX log-likelihoods.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="fit the textbook MLE cases and print their summaries",
        description=(
            "Fit the textbook maximum-likelihood cases (Bernoulli, Normal, categorical, "
            "linear and logistic regression) and check each against its closed form. "
            "Runs in float64 and uses JAX's persistent compilation cache."
        ),
    )
    demo.add_argument("--no-cache", action="store_true",
                      help="do not use JAX's persistent compilation cache")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        from . import __version__

        print(f"jaxmle {__version__}")
        return 0
    if args.command == "demo":
        import jax

        jax.config.update("jax_enable_x64", True)
        if not args.no_cache:
            from ._cache import enable_compilation_cache

            enable_compilation_cache()
        from . import demo

        return demo.main()
    _parser().print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
