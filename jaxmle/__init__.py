"""jaxmle: maximum-likelihood fitting for any JAX log-likelihood.

Public API (the contract is ``docs/API.md`` in the repository): :func:`fit`,
:func:`fit_batch`, :func:`stack_datasets`, :func:`lrt`, :func:`fit_model`,
:func:`fit_distribution`, :func:`compare_distributions` and the result classes
(:class:`FitResult`, :class:`BatchFitResult`, ...), plus the warning classes.
Everything in modules starting with ``_`` is private.
"""

from . import _bootstrap, _delta, _laplace, _profile, _summary  # noqa: F401  (FitResult's methods)
from ._api import fit as fit
from ._api import fit_batch as fit_batch
from ._batch_result import BatchFitResult as BatchFitResult
from ._cache import enable_compilation_cache as enable_compilation_cache
from ._data import stack_datasets as stack_datasets
from ._dist_compare import DistributionComparison as DistributionComparison
from ._dist_result import DistributionFit as DistributionFit
from ._lrt import lrt as lrt
from ._model import fit_model as fit_model
from ._result import FitResult as FitResult
from ._sharding import shard_observations as shard_observations
from ._typing import ConvergenceWarning as ConvergenceWarning
from ._typing import JaxmleWarning as JaxmleWarning
from ._typing import PrecisionWarning as PrecisionWarning
from ._typing import SingularInformationWarning as SingularInformationWarning
from .distributions import compare_distributions as compare_distributions
from .distributions import fit_distribution as fit_distribution

__version__ = "0.1.0"

__all__ = [
    "BatchFitResult",
    "ConvergenceWarning",
    "DistributionComparison",
    "DistributionFit",
    "FitResult",
    "JaxmleWarning",
    "PrecisionWarning",
    "SingularInformationWarning",
    "compare_distributions",
    "enable_compilation_cache",
    "fit",
    "fit_batch",
    "fit_distribution",
    "fit_model",
    "lrt",
    "shard_observations",
    "stack_datasets",
]
