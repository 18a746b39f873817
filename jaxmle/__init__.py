"""jaxmle: maximum-likelihood fitting for any JAX log-likelihood.

Public API (the contract is ``docs/API.md`` in the repository): :func:`fit`,
:func:`fit_batch`, :func:`stack_datasets`, :func:`lrt`, :func:`fit_model`,
:func:`fit_distribution`, :func:`compare_distributions` and the result classes
(:class:`FitResult`, :class:`BatchFitResult`, ...), plus the warning classes.
Everything else is private: the subpackages (``core``, ``results``, ``fitting``,
``inference``, ``random``, ``model``, ``distributions``) are laid out in
``docs/ARCHITECTURE.md``.
"""

import importlib
from typing import TYPE_CHECKING, Any

import jaxmle.results.result as _result
from jaxmle._api import fit as fit
from jaxmle._api import fit_batch as fit_batch
from jaxmle._api import warmup as warmup
from jaxmle.core.typing import BoundaryWarning as BoundaryWarning
from jaxmle.core.typing import ConvergenceWarning as ConvergenceWarning
from jaxmle.core.typing import JaxmleWarning as JaxmleWarning
from jaxmle.core.typing import PrecisionWarning as PrecisionWarning
from jaxmle.core.typing import SingularInformationWarning as SingularInformationWarning
from jaxmle.fitting.cache import disable_compilation_cache as disable_compilation_cache
from jaxmle.fitting.cache import enable_compilation_cache as enable_compilation_cache
from jaxmle.fitting.data import stack_datasets as stack_datasets
from jaxmle.fitting.sharding import shard_observations as shard_observations
from jaxmle.results.result import FitResult as FitResult

# The result methods implemented in inference/: each module registers its methods
# (``@provides``) when it is imported, here on the method's first use.
_result.provided_by("jaxmle.inference.bootstrap", "bootstrap")
_result.provided_by("jaxmle.inference.delta", "delta")
_result.provided_by("jaxmle.inference.laplace", "laplace")
_result.provided_by("jaxmle.inference.profile", "profile", "profile_intervals")
_result.provided_by("jaxmle.inference.summary", "summary")

# Public names imported on first use (PEP 562): fit_model and the distributions need
# NumPyro (about a second to import), and a plain ``jm.fit`` needs none of them.
# ``from jaxmle import fit_model`` and ``jm.fit_model`` work as for any other name.
_LAZY = {
    "BatchFitResult": "jaxmle.results.batch",
    "DistributionComparison": "jaxmle.distributions.compare",
    "DistributionFit": "jaxmle.distributions.result",
    "compare_distributions": "jaxmle.distributions",
    "fit_distribution": "jaxmle.distributions",
    "fit_model": "jaxmle.model.numpyro_model",
    "lrt": "jaxmle.inference.lrt",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from jaxmle.distributions import compare_distributions as compare_distributions
    from jaxmle.distributions import fit_distribution as fit_distribution
    from jaxmle.distributions.compare import DistributionComparison as DistributionComparison
    from jaxmle.distributions.result import DistributionFit as DistributionFit
    from jaxmle.inference.lrt import lrt as lrt
    from jaxmle.model.numpyro_model import fit_model as fit_model
    from jaxmle.results.batch import BatchFitResult as BatchFitResult


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value   # later lookups find a plain module attribute
        return value
    raise AttributeError(f"module 'jaxmle' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "BatchFitResult",
    "BoundaryWarning",
    "ConvergenceWarning",
    "DistributionComparison",
    "DistributionFit",
    "FitResult",
    "JaxmleWarning",
    "PrecisionWarning",
    "SingularInformationWarning",
    "compare_distributions",
    "disable_compilation_cache",
    "enable_compilation_cache",
    "fit",
    "fit_batch",
    "fit_distribution",
    "fit_model",
    "lrt",
    "shard_observations",
    "stack_datasets",
    "warmup",
]
