"""The ``jaxmle`` command line.

``jaxmle demo`` runs the textbook showcase; ``jaxmle fit FILE`` fits candidate
distributions to one column of a data file and ranks them. Bad input gets a
one-line ``error:`` message and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import warnings

EXIT_OK, EXIT_FAILED, EXIT_INPUT = 0, 1, 2
DEFAULT_DISTS = "normal,lognormal,gamma,weibull,exponential"

_FIT_DESCRIPTION = """\
Fit candidate distributions to one column of numbers by maximum likelihood
(jaxmle.compare_distributions), print each fit's summary (estimates, standard
errors from the exact observed information, confidence intervals) and a table
ranking the candidates by AIC, with BIC and a goodness-of-fit statistic
(Kolmogorov-Smirnov D for continuous, chi-square for discrete candidates).

Input: a CSV file (delimiter ',', tab or ';', detected) or whitespace-separated
text; '-' reads standard input. The first row is a header when it has a
non-numeric cell. Lines starting with '#' are comments. The input file is only
read, never modified.

Missing values (empty cells, NA, NaN, N/A, null, None) are dropped and counted
(an error with --strict). Non-numeric or infinite values are an error naming
their lines; so is a row with more or fewer fields than the header (line and
field count). A candidate whose support does not contain the data (e.g. gamma
with a negative value) is skipped with the reason; the others are still fitted.
"""

_FIT_EPILOG = """\
distribution names:
  NumPyro class names, case-insensitive (normal, lognormal, gamma, inversegamma,
  exponential, weibull, beta, studentt, cauchy, laplace, gumbel, pareto,
  halfnormal, logistic, poisson, geometric, binomial, negativebinomial, ...),
  or aliases: norm, gaussian, lognorm, expon, invgamma, t, halfnorm, gumbel_r,
  weibull_min, pois, geom, binom, nbinom, negbin. Binomial needs
  --fixed total_count=N; negativebinomial is the mean-dispersion form.

exit status:
  0  the fits ran (some candidates may have been skipped)
  1  no candidate could be fitted, or an internal error
  2  bad input: unreadable file, unknown column or distribution, a ragged row,
     non-numeric or infinite values, missing values with --strict, no data, bad
     option

examples:
  jaxmle fit waiting.csv --column waiting --dist gamma,weibull,lognormal
  jaxmle fit counts.txt --dist poisson,nbinom,geom --json fits.json
  jaxmle fit trials.csv -c 2 --dist binomial --fixed total_count=20
  cut -d, -f3 data.csv | jaxmle fit - --dist norm,t --plot fit.png
"""


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one ``error:`` line (exit status 2), like every other."""

    def error(self, message: str):
        self.exit(EXIT_INPUT, f"error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jaxmle",
        description="Maximum-likelihood fitting for JAX log-likelihoods.",
        epilog="Run 'jaxmle COMMAND --help' for a command's options.",
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
    _add_fit_parser(sub)
    return parser


def _add_fit_parser(sub) -> None:
    fit = sub.add_parser(
        "fit", help="fit candidate distributions to a column of data and rank them",
        description=_FIT_DESCRIPTION, epilog=_FIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    fit.add_argument("file", help="CSV or whitespace-separated text file; '-' for standard input")
    fit.add_argument("-c", "--column", metavar="NAME|INDEX",
                     help="the column to fit: a header name, or a 0-based index (default: the "
                          "only column)")
    fit.add_argument("-d", "--dist", metavar="LIST", default=DEFAULT_DISTS,
                     help=f"comma-separated candidate distributions (default: {DEFAULT_DISTS})")
    fit.add_argument("--fixed", metavar="NAME=VALUE", action="append", default=[],
                     help="hold a parameter fixed in every candidate that has it, e.g. "
                          "total_count=20 for binomial, loc=0 (repeatable)")
    fit.add_argument("--criterion", choices=("aic", "bic"), default="aic",
                     help="rank by AIC (default) or BIC")
    fit.add_argument("--plot", metavar="FILE",
                     help="save the four-panel diagnostic plot (histogram with fitted densities, "
                          "Q-Q, P-P, CDFs) of the fitted candidates; needs matplotlib")
    fit.add_argument("--json", metavar="FILE",
                     help="write the results as JSON ('-': to standard output, the report then "
                          "goes to standard error)")
    fit.add_argument("--strict", action="store_true",
                     help="missing values are an error instead of being dropped")
    fit.add_argument("-q", "--quiet", action="store_true",
                     help="print only the ranking table, not each fit's summary")
    fit.add_argument("--no-cache", action="store_true",
                     help="do not use JAX's persistent compilation cache")


class _Fail(Exception):
    """A one-line error and the exit status to leave with."""

    def __init__(self, message: str, status: int = EXIT_INPUT):
        super().__init__(message)
        self.status = status


def _check_output(path: str | None, source: str, option: str) -> None:
    if path is None or path == "-":
        return
    if source != "-" and os.path.abspath(path) == os.path.abspath(source):
        raise _Fail(f"{option} {path!r} is the input file; it is never overwritten")
    if source != "-" and os.path.exists(path) and os.path.samefile(path, source):
        raise _Fail(f"{option} {path!r} is the input file; it is never overwritten")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise _Fail(f"{option} {path!r}: directory {parent!r} does not exist")


def _parse_fixed(items: list[str]) -> dict[str, float | int]:
    fixed = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise _Fail(f"--fixed {item!r}: expected NAME=VALUE, e.g. total_count=20")
        try:
            number = int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise _Fail(f"--fixed {item!r}: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise _Fail(f"--fixed {item!r}: the value must be finite")
        fixed[name] = number
    return fixed


def _dist_names(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise _Fail("--dist is empty: give at least one distribution, e.g. --dist gamma,weibull")
    return list(dict.fromkeys(names))


def _setup_jax(no_cache: bool) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    if not no_cache:
        from jaxmle.fitting.cache import enable_compilation_cache

        enable_compilation_cache()


def _resolve(names: list[str]) -> list:
    from jaxmle.distributions import resolve_name

    classes = []
    for name in names:
        try:
            cls = resolve_name(name)
        except ValueError as err:
            raise _Fail(str(err)) from None
        if cls not in classes:
            classes.append(cls)
    return classes


def _jsonable(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return _jsonable(obj.item())
    return obj


def _write_json(path: str, payload: dict) -> None:
    text = json.dumps(_jsonable(payload), indent=2, allow_nan=False)
    if path == "-":
        print(text)
        return
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    except OSError as err:
        raise _Fail(f"cannot write --json {path!r}: {err.strerror or err}") from None


def _fit_all(values, classes, fixed, criterion, report):
    """compare_distributions with every warning turned into one 'warning:' line."""
    from jaxmle.distributions import compare_distributions
    from jaxmle.distributions.fit import cli_hints

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = compare_distributions(values, classes, fixed=fixed, criterion=criterion)
        except ValueError as err:
            raise _Fail(cli_hints(str(err)), EXIT_FAILED) from None
    # hints in command-line syntax (--fixed total_count=20), not the Python API's fixed={...}
    table = dataclasses.replace(table, skipped={k: cli_hints(v) for k, v in table.skipped.items()})
    for w in caught:
        print(f"warning: {w.message}", file=report)
    used = {k for f in table.fits.values() for k in f.fixed}
    for name in sorted(set(fixed) - used):
        print(f"warning: --fixed {name}: no fitted candidate has a parameter {name!r}", file=report)
    return table


def _fit_command(args) -> int:
    from jaxmle.distributions.io import InputError, read_column

    _check_output(args.json, args.file, "--json")
    _check_output(args.plot, args.file, "--plot")
    if args.plot is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise _Fail("--plot needs matplotlib: pip install 'jaxmle[plot]'")
    fixed = _parse_fixed(args.fixed)
    names = _dist_names(args.dist)
    try:
        column = read_column(args.file, args.column, args.strict)
    except InputError as err:
        raise _Fail(str(err)) from None
    report = sys.stderr if args.json == "-" else sys.stdout
    source = "standard input" if args.file == "-" else repr(args.file)
    dropped = (f"; {len(column.missing_lines)} missing value(s) dropped (lines "
               f"{', '.join(map(str, column.missing_lines[:10]))}"
               f"{', …' if len(column.missing_lines) > 10 else ''})" if column.missing_lines else "")
    print(f"Data: column {column.label!r} of {source}, n = {column.values.size}{dropped}", file=report)
    _setup_jax(args.no_cache)
    classes = _resolve(names)
    table = _fit_all(column.values, classes, fixed, args.criterion, report)
    if not args.quiet:
        for name in table.names:
            print("\n" + str(table.fits[name].summary()), file=report)
    print("\n" + str(table), file=report)
    if args.json is not None:
        _write_json(args.json, {
            "input": {"file": args.file, "column": column.label, "n": int(column.values.size),
                      "missing_dropped": len(column.missing_lines),
                      "missing_lines": list(column.missing_lines)},
            **table.to_dict(),
            "fits": {name: table.fits[name].to_dict() for name in table.names},
        })
    if args.plot is not None:
        _save_plot(table, args.plot)
        print(f"\nPlot saved to {args.plot}", file=report)
    return EXIT_OK


def _save_plot(table, path: str) -> None:
    from jaxmle.plots import plot_fit

    try:
        plot_fit(table, path=path)
    except (OSError, ValueError) as err:
        raise _Fail(f"cannot write --plot {path!r}: {err}", EXIT_FAILED) from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        from jaxmle import __version__

        print(f"jaxmle {__version__}")
        return 0
    if args.command == "demo":
        import jax

        jax.config.update("jax_enable_x64", True)
        if not args.no_cache:
            from jaxmle.fitting.cache import enable_compilation_cache

            enable_compilation_cache()
        from jaxmle import demo

        return demo.main()
    if args.command == "fit":
        return _run_fit(args)
    _parser().print_help()
    return 0


def _run_fit(args) -> int:
    """``jaxmle fit`` with every failure turned into one ``error:`` line and an exit status."""
    try:
        return _fit_command(args)
    except _Fail as err:
        print(f"error: {err}", file=sys.stderr)
        return err.status
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # never a traceback on the command line
        print(f"error: internal error ({type(err).__name__}): {err}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
