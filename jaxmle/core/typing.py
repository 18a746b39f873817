"""Type aliases, the solver status codes and jaxmle's warning classes."""

from __future__ import annotations

import enum
import inspect
import os
import sys
from typing import Any, Callable

Params = Any
"""A pytree of parameter arrays (normally a dict of scalars and arrays)."""

Data = Any
"""Any pytree of data arrays; the leading axis of the leaves indexes observations."""

LogLikFn = Callable[[Params, Data], Any]
"""``loglik(params, data)`` returning a scalar or a vector of per-observation terms."""


def is_optax_transformation(method: Any) -> bool:
    """True for an ``optax.GradientTransformation``, without importing optax: a user who
    passes one has imported it (jaxmle imports optax only for ``"lbfgs"``/``"adam"``)."""
    optax = sys.modules.get("optax")
    return optax is not None and isinstance(method, optax.GradientTransformation)


class Status(enum.IntEnum):
    """Outcome of the optimiser, computed inside the compiled program."""

    SUCCESS = 0
    MAX_ITER = 1
    STALLED = 2
    NONFINITE_START = 3
    NONFINITE_DATA = 4      # fit_batch: the dataset has NaN/inf values and was not fitted
    FLAT = 5                # the "optimum" is flat along a direction: no regular maximum
    SADDLE = 6              # stationary, but the information is indefinite: not a maximum
    DIVERGED = 7            # parameters run to the edge of their support: no maximum attained
    NOT_STATIONARY = 8      # the solver's own test passed, the exact check at the point did not


STATUS_MESSAGES = {
    Status.SUCCESS: "converged",
    Status.MAX_ITER: (
        "the iteration limit was reached before the convergence tests passed; "
        "raise max_iter, start closer to the optimum, or check that the "
        "likelihood is bounded"
    ),
    Status.STALLED: (
        "no step could improve the log-likelihood while the gradient is not small "
        "(Newton: the line search kept failing and the Levenberg–Marquardt damping grew "
        "without bound; optax: the step reached a non-finite value): the likelihood may "
        "be non-smooth, unbounded, or numerically flat here"
    ),
    Status.NONFINITE_START: "the log-likelihood or its gradient is not finite at init",
    Status.NONFINITE_DATA: "the dataset contains NaN/inf values and was not fitted",
    Status.FLAT: (
        "the log-likelihood barely changes (or still rises) 3 standard errors away along "
        "one direction, so this is no regular maximum: the supremum may lie at infinity "
        "(e.g. complete separation in a logistic regression, a variance shrinking to 0) "
        "or on a flat ridge; the estimates and standard errors are not meaningful"
    ),
    Status.SADDLE: (
        "the gradient vanishes but the information matrix is indefinite: a saddle point "
        "(the log-likelihood rises along some direction), not a maximum; start elsewhere"
    ),
    Status.DIVERGED: (
        "the log-likelihood does not fall (or still rises) as parameters run further towards "
        "the edge of their support, or along a direction in which the information is "
        "singular: the supremum is not attained (an unbounded density, e.g. a variance or a "
        "mixture weight going to 0, a boundary maximum, or a model that degenerates as "
        "parameters run to ±infinity)"
    ),
    Status.NOT_STATIONARY: (
        "the optimiser's own stopping test passed, but at the final point the exact Hessian "
        "puts the maximum a meaningful distance away (badly scaled parameters, e.g. L-BFGS on "
        "data of scale 1e7, or a spread so small that the information is numerically "
        "singular); use method='newton', rescale the data or the parameters, or start closer"
    ),
}


STATUS_LABELS = {
    Status.SUCCESS: "converged",
    Status.MAX_ITER: "iteration limit",
    Status.STALLED: "stalled",
    Status.NONFINITE_START: "not finite at init",
    Status.NONFINITE_DATA: "NaN/inf in the data",
    Status.FLAT: "flat: no regular maximum",
    Status.SADDLE: "saddle point",
    Status.DIVERGED: "diverged to an edge",
    Status.NOT_STATIONARY: "not stationary",
}
"""Short names of the statuses, for counts and tables."""


class JaxmleWarning(UserWarning):
    """Base class of the warnings jaxmle emits."""


class ConvergenceWarning(JaxmleWarning):
    """The optimiser stopped without passing its convergence tests."""


class SingularInformationWarning(JaxmleWarning):
    """The information matrix is singular or not positive definite at the estimate."""


class BoundaryWarning(JaxmleWarning):
    """A variance component (or other constrained parameter) is estimated on the boundary
    of its space: reported at the edge with a NaN standard error."""


class PrecisionWarning(JaxmleWarning):
    """The fit ran in float32, so standard errors are only float32-accurate."""


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def user_stacklevel() -> int:
    """``stacklevel`` for ``warnings.warn`` that points at the first frame outside jaxmle."""
    frame, index = inspect.currentframe(), 0
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
        _PACKAGE_DIR + os.sep
    ):
        frame, index = frame.f_back, index + 1
    return max(index, 1)
