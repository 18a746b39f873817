"""NIST StRD certified regression problems for the test suite.

The data live in ``tests/data/nist/`` (copied from the NIST Statistical Reference
Datasets, public domain):

* ``*.dat``: the 27 nonlinear least-squares (NLS) problems in NIST's own format.
  :func:`load_nls` parses one into a :class:`NistProblem`.
* ``linear.json``: the 11 linear regression problems. :func:`load_linear` turns one
  into a :class:`LinearProblem` with its design matrix.

Every NLS mean function is written once, against an array namespace ``xp``
(``jax.numpy`` by default, ``numpy`` for plain float64 checks that must not depend
on JAX's x64 flag).

Formula notes (see also the docstrings of the individual mean functions):

* Nelson is the one NLS problem with two predictors and a transformed response:
  NIST's model is ``log[y] = b1 - b2*x1*exp[-b3*x2]``. Its ``x`` is ``(n, 2)`` and
  its ``y`` is already ``log`` of the recorded response, so that for every problem
  the certified RSS is ``sum((y - mean(b, x))**2)``.
* The certified RSS of Lanczos1 (1.4e-25) is far below what the 11-digit certified
  parameters can reproduce (the RSS there is ~4e-21), and the RSS at Filip's 15-digit
  certified betas matches only to ~8 digits (see ``test_nist.py``).
"""

from __future__ import annotations

import functools

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax.numpy as jnp
import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data" / "nist"


# ---------------------------------------------------------------------------
# NLS mean functions.  ``b`` holds b1..bK as b[0]..b[K-1].
# ---------------------------------------------------------------------------


def _misra1a(b, x, xp=jnp):
    """y = b1*(1-exp[-b2*x])  (also BoxBOD)."""
    return b[0] * (1 - xp.exp(-b[1] * x))


def _chwirut(b, x, xp=jnp):
    """y = exp[-b1*x]/(b2+b3*x)."""
    return xp.exp(-b[0] * x) / (b[1] + b[2] * x)


def _lanczos(b, x, xp=jnp):
    """y = b1*exp(-b2*x) + b3*exp(-b4*x) + b5*exp(-b6*x)."""
    return b[0] * xp.exp(-b[1] * x) + b[2] * xp.exp(-b[3] * x) + b[4] * xp.exp(-b[5] * x)


def _gauss(b, x, xp=jnp):
    """y = b1*exp(-b2*x) + b3*exp(-(x-b4)**2/b5**2) + b6*exp(-(x-b7)**2/b8**2)."""
    return (
        b[0] * xp.exp(-b[1] * x)
        + b[2] * xp.exp(-((x - b[3]) ** 2) / b[4] ** 2)
        + b[5] * xp.exp(-((x - b[6]) ** 2) / b[7] ** 2)
    )


def _danwood(b, x, xp=jnp):
    """y = b1*x**b2."""
    return b[0] * x ** b[1]


def _misra1b(b, x, xp=jnp):
    """y = b1 * (1-(1+b2*x/2)**(-2))."""
    return b[0] * (1 - (1 + b[1] * x / 2) ** (-2))


def _kirby2(b, x, xp=jnp):
    """y = (b1 + b2*x + b3*x**2) / (1 + b4*x + b5*x**2)."""
    return (b[0] + b[1] * x + b[2] * x**2) / (1 + b[3] * x + b[4] * x**2)


def _cubic_over_cubic(b, x, xp=jnp):
    """y = (b1+b2*x+b3*x**2+b4*x**3) / (1+b5*x+b6*x**2+b7*x**3)  (Hahn1, Thurber)."""
    num = b[0] + b[1] * x + b[2] * x**2 + b[3] * x**3
    den = 1 + b[4] * x + b[5] * x**2 + b[6] * x**3
    return num / den


def _nelson(b, x, xp=jnp):
    """log[y] = b1 - b2*x1 * exp[-b3*x2]; ``x`` is (n, 2) = [x1, x2], ``y`` is log."""
    return b[0] - b[1] * x[:, 0] * xp.exp(-b[2] * x[:, 1])


def _mgh17(b, x, xp=jnp):
    """y = b1 + b2*exp[-x*b4] + b3*exp[-x*b5]."""
    return b[0] + b[1] * xp.exp(-x * b[3]) + b[2] * xp.exp(-x * b[4])


def _misra1c(b, x, xp=jnp):
    """y = b1 * (1-(1+2*b2*x)**(-.5))."""
    return b[0] * (1 - (1 + 2 * b[1] * x) ** (-0.5))


def _misra1d(b, x, xp=jnp):
    """y = b1*b2*x*((1+b2*x)**(-1))."""
    return b[0] * b[1] * x * ((1 + b[1] * x) ** (-1))


def _roszman1(b, x, xp=jnp):
    """y = b1 - b2*x - arctan[b3/(x-b4)]/pi  (plain arctan, not arctan2)."""
    return b[0] - b[1] * x - xp.arctan(b[2] / (x - b[3])) / xp.pi


def _enso(b, x, xp=jnp):
    """y = b1 + b2*cos(2 pi x/12) + b3*sin(2 pi x/12) + b5*cos(2 pi x/b4)
    + b6*sin(2 pi x/b4) + b8*cos(2 pi x/b7) + b9*sin(2 pi x/b7)."""
    w = 2 * xp.pi * x
    return (
        b[0]
        + b[1] * xp.cos(w / 12)
        + b[2] * xp.sin(w / 12)
        + b[4] * xp.cos(w / b[3])
        + b[5] * xp.sin(w / b[3])
        + b[7] * xp.cos(w / b[6])
        + b[8] * xp.sin(w / b[6])
    )


def _mgh09(b, x, xp=jnp):
    """y = b1*(x**2+x*b2) / (x**2+x*b3+b4)."""
    return b[0] * (x**2 + x * b[1]) / (x**2 + x * b[2] + b[3])


def _thurber(b, x, xp=jnp):
    """Same cubic/cubic rational as Hahn1."""
    return _cubic_over_cubic(b, x, xp)


def _mgh10(b, x, xp=jnp):
    """y = b1 * exp[b2/(x+b3)]."""
    return b[0] * xp.exp(b[1] / (x + b[2]))


def _eckerle4(b, x, xp=jnp):
    """y = (b1/b2) * exp[-0.5*((x-b3)/b2)**2]."""
    return (b[0] / b[1]) * xp.exp(-0.5 * ((x - b[2]) / b[1]) ** 2)


def _rat42(b, x, xp=jnp):
    """y = b1 / (1+exp[b2-b3*x])."""
    return b[0] / (1 + xp.exp(b[1] - b[2] * x))


def _rat43(b, x, xp=jnp):
    """y = b1 / ((1+exp[b2-b3*x])**(1/b4))."""
    return b[0] / ((1 + xp.exp(b[1] - b[2] * x)) ** (1 / b[3]))


def _bennett5(b, x, xp=jnp):
    """y = b1 * (b2+x)**(-1/b3)."""
    return b[0] * (b[1] + x) ** (-1 / b[2])


MEANS: dict[str, Callable] = {
    "Bennett5": _bennett5,
    "BoxBOD": _misra1a,
    "Chwirut1": _chwirut,
    "Chwirut2": _chwirut,
    "DanWood": _danwood,
    "ENSO": _enso,
    "Eckerle4": _eckerle4,
    "Gauss1": _gauss,
    "Gauss2": _gauss,
    "Gauss3": _gauss,
    "Hahn1": _cubic_over_cubic,
    "Kirby2": _kirby2,
    "Lanczos1": _lanczos,
    "Lanczos2": _lanczos,
    "Lanczos3": _lanczos,
    "MGH09": _mgh09,
    "MGH10": _mgh10,
    "MGH17": _mgh17,
    "Misra1a": _misra1a,
    "Misra1b": _misra1b,
    "Misra1c": _misra1c,
    "Misra1d": _misra1d,
    "Nelson": _nelson,
    "Rat42": _rat42,
    "Rat43": _rat43,
    "Roszman1": _roszman1,
    "Thurber": _thurber,
}

NLS_NAMES: list[str] = sorted(p.stem for p in DATA_DIR.glob("*.dat"))


# ---------------------------------------------------------------------------
# Problem containers
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class NistProblem:
    """One NIST StRD nonlinear least-squares problem.

    ``y`` is the regression response (for Nelson: ``log`` of the recorded y) and
    ``x`` the predictor, 1-D except for Nelson, whose ``x`` is ``(n, 2)``.
    ``mean(b, x)`` is the model mean in ``jax.numpy``; the certified RSS is
    ``sum((y - mean(certified_params, x))**2)``.
    """

    name: str
    difficulty: str  # "Lower", "Average" or "Higher"
    formula: str  # the model line(s) as printed by NIST
    x: np.ndarray
    y: np.ndarray
    start1: np.ndarray
    start2: np.ndarray
    certified_params: np.ndarray
    certified_sd: np.ndarray
    certified_rss: float
    mean: Callable

    @property
    def n(self) -> int:
        """Number of observations."""
        return int(self.y.shape[0])

    @property
    def k(self) -> int:
        """Number of parameters."""
        return int(self.certified_params.shape[0])

    @property
    def starts(self) -> dict[str, np.ndarray]:
        """Both NIST starting points, keyed ``"start1"`` / ``"start2"``."""
        return {"start1": self.start1, "start2": self.start2}

    def mean_np(self, b) -> np.ndarray:
        """Model mean evaluated with plain numpy (float64 regardless of JAX config)."""
        return MEANS[self.name](np.asarray(b, dtype=np.float64), self.x, xp=np)

    def rss_np(self, b) -> float:
        """Residual sum of squares at ``b`` in numpy float64."""
        r = self.y - self.mean_np(b)
        return float(r @ r)


@dataclass(frozen=True, eq=False)
class LinearProblem:
    """One NIST StRD linear regression problem, as ``y = X @ beta + e``.

    ``X`` includes the intercept column where the NIST model has one (all but
    NoInt1/NoInt2); polynomial models (Norris, Pontius, Filip, Wampler1-5) use the
    columns ``1, x, x**2, ..., x**degree``.
    """

    name: str
    model: str  # "poly", "noint" or "linear"
    X: np.ndarray
    y: np.ndarray
    certified_params: np.ndarray
    certified_se: np.ndarray
    certified_rss: float

    @property
    def n(self) -> int:
        """Number of observations."""
        return int(self.X.shape[0])

    @property
    def k(self) -> int:
        """Number of coefficients (columns of ``X``)."""
        return int(self.X.shape[1])

    def rss_np(self, beta) -> float:
        """Residual sum of squares at ``beta`` in numpy float64."""
        r = self.y - self.X @ np.asarray(beta, dtype=np.float64)
        return float(r @ r)


# ---------------------------------------------------------------------------
# .dat parsing
# ---------------------------------------------------------------------------

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][-+]?\d+)?"


def _line_range(text: str, label: str) -> tuple[int, int]:
    """1-based inclusive line range that the header gives for ``label``."""
    m = re.search(rf"{label}\s*\(lines\s+(\d+)\s+to\s+(\d+)\)", text)
    if m is None:
        raise ValueError(f"no line range for {label!r}")
    return int(m.group(1)), int(m.group(2))


def _numbers(line: str) -> list[float]:
    """All numeric tokens on ``line`` as floats."""
    return [float(t.replace("D", "E").replace("d", "e")) for t in re.findall(_NUMBER, line)]


def _parse_parameters(lines: list[str]) -> np.ndarray:
    """Rows ``bK = start1 start2 certified sd`` -> array of shape (K, 4)."""
    rows = []
    for i, line in enumerate(lines, start=1):
        m = re.match(rf"\s*b{i}\s*=(.*)$", line)
        if m is None:
            raise ValueError(f"expected parameter b{i}, got {line!r}")
        values = _numbers(m.group(1))
        if len(values) != 4:
            raise ValueError(f"expected 4 numbers for b{i}, got {line!r}")
        rows.append(values)
    return np.array(rows, dtype=np.float64)


def _parse_formula(text: str) -> str:
    """The model line(s) of the ``Model:`` section, joined into one string."""
    section = text.split("Model:", 1)[1].split("Starting", 1)[0]
    lines = [ln.strip() for ln in section.splitlines()[2:]]
    return " ".join(ln for ln in lines if ln)


def parse_dat(path: Path) -> dict:
    """Parse one NIST StRD NLS ``.dat`` file into a dict of raw fields."""
    text = path.read_text()
    lines = text.splitlines()
    p_first, p_last = _line_range(text, "Starting Values")
    d_first, d_last = _line_range(text, "Data")
    params = _parse_parameters(lines[p_first - 1 : p_last])
    data = np.array([_numbers(ln) for ln in lines[d_first - 1 : d_last]], dtype=np.float64)
    rss = re.search(rf"Residual Sum of Squares:\s*({_NUMBER})", text)
    difficulty = re.search(r"(Lower|Average|Higher) Level of Difficulty", text)
    n_obs = re.search(r"Number of Observations:\s*(\d+)", text)
    if rss is None or difficulty is None or n_obs is None:
        raise ValueError(f"{path.name}: missing certified RSS, difficulty or n")
    if data.shape[0] != int(n_obs.group(1)):
        raise ValueError(f"{path.name}: read {data.shape[0]} rows, expected {n_obs.group(1)}")
    return {
        "name": path.stem,
        "formula": _parse_formula(text),
        "difficulty": difficulty.group(1),
        "start1": params[:, 0],
        "start2": params[:, 1],
        "certified_params": params[:, 2],
        "certified_sd": params[:, 3],
        "certified_rss": float(rss.group(1)),
        "y_raw": data[:, 0],
        "x_raw": data[:, 1:],
    }


def load_nls(name: str) -> NistProblem:
    """Load the NIST NLS problem ``name`` (one of :data:`NLS_NAMES`)."""
    raw = parse_dat(DATA_DIR / f"{name}.dat")
    x, y = raw["x_raw"], raw["y_raw"]
    if name == "Nelson":
        y = np.log(y)  # NIST's response for Nelson is log[y]
    elif x.shape[1] == 1:
        x = x[:, 0]
    else:
        raise ValueError(f"{name}: unexpected {x.shape[1]} predictors")
    return NistProblem(
        name=name,
        difficulty=raw["difficulty"],
        formula=raw["formula"],
        x=np.ascontiguousarray(x),
        y=y,
        start1=raw["start1"],
        start2=raw["start2"],
        certified_params=raw["certified_params"],
        certified_sd=raw["certified_sd"],
        certified_rss=raw["certified_rss"],
        mean=MEANS[name],
    )


# ---------------------------------------------------------------------------
# Linear problems
# ---------------------------------------------------------------------------


def _read_linear_json() -> dict:
    with open(DATA_DIR / "linear.json") as f:
        return json.load(f)


LINEAR_NAMES: list[str] = sorted(_read_linear_json())


def _design_matrix(spec: dict) -> np.ndarray:
    """Design matrix for a linear.json entry (intercept first where present)."""
    cols = np.asarray(spec["x"], dtype=np.float64)  # (n_predictors, n)
    model = spec["model"]
    if model == "poly":
        (x,) = cols
        return np.vander(x, spec["degree"] + 1, increasing=True)
    if model == "noint":
        return cols.T.copy()
    if model == "linear":
        return np.column_stack([np.ones(cols.shape[1]), cols.T])
    raise ValueError(f"unknown linear model {model!r}")


def load_linear(name: str) -> LinearProblem:
    """Load the NIST linear problem ``name`` (one of :data:`LINEAR_NAMES`)."""
    spec = _read_linear_json()[name]
    X = _design_matrix(spec)
    beta = np.asarray(spec["certified_beta"], dtype=np.float64)
    if X.shape[1] != beta.shape[0]:
        raise ValueError(f"{name}: design has {X.shape[1]} columns, {beta.shape[0]} betas")
    return LinearProblem(
        name=name,
        model=spec["model"],
        X=X,
        y=np.asarray(spec["y"], dtype=np.float64),
        certified_params=beta,
        certified_se=np.asarray(spec["certified_se"], dtype=np.float64),
        certified_rss=float(spec["exact_rss"]),
    )


# ---------------------------------------------------------------------------
# Accuracy helpers
# ---------------------------------------------------------------------------


def lre(estimate, certified, max_digits: float = 15.0) -> np.ndarray:
    """Log relative error -log10(|est - cert| / |cert|), elementwise.

    Falls back to the absolute error where ``certified == 0`` and is capped at
    ``max_digits`` (an exact match gives ``max_digits``).
    """
    est = np.asarray(estimate, dtype=np.float64)
    cert = np.asarray(certified, dtype=np.float64)
    err = np.abs(est - cert)
    scale = np.where(cert == 0, 1.0, np.abs(cert))
    with np.errstate(divide="ignore"):
        digits = -np.log10(err / scale)
    return np.minimum(np.nan_to_num(digits, nan=0.0, posinf=max_digits), max_digits)


@functools.lru_cache(maxsize=None)
def concentrated_loglik(mean):
    """Profile Gaussian log-likelihood -n/2 log(RSS(b)/n) (constants dropped), one function
    object per mean function (cached: the two starts of a problem, its SE test and the
    benchmark share the compiled programs; jaxmle keys them by function)."""
    import jax.numpy as jnp

    def loglik(params, data):
        r = data["y"] - mean(params["b"], data["x"])
        n = r.shape[0]
        return -0.5 * n * jnp.log(jnp.sum(r**2) / n)

    return loglik


def canonical(name: str, b) -> np.ndarray:
    """``b`` with the interchangeable terms of a model in the certified order.

    Lanczos1-3 (three exponentials b1·e^(−b2x) + b3·e^(−b4x) + b5·e^(−b6x)) and Gauss1-3
    (two Gaussian peaks (b3, b4, b5) and (b6, b7, b8)) are the same curve, with the same
    RSS, under any permutation of their terms: a fit that ends in another order has found
    the certified optimum with the terms relabelled. The certified values list the terms
    by increasing rate (Lanczos: b2 < b4 < b6) and increasing location (Gauss: b4 < b7);
    this puts ``b`` in that order. Eckerle4, (b1/b2)·exp(−½((x − b3)/b2)²), is the same
    curve at (−b1, −b2, b3): the certified optimum has b2 > 0 (every other problem:
    unchanged).
    """
    b = np.array(b, dtype=np.float64)
    if name.startswith("Lanczos") and b.shape == (6,):
        terms = b.reshape(3, 2)
        return terms[np.argsort(terms[:, 1], kind="stable")].reshape(6)
    if name.startswith("Gauss") and b.shape == (8,):
        peaks = b[2:].reshape(2, 3)
        return np.concatenate([b[:2], peaks[np.argsort(peaks[:, 1], kind="stable")].reshape(6)])
    if name == "Eckerle4" and b.shape == (3,) and b[1] < 0:
        return np.array([-b[0], -b[1], b[2]])
    return b
