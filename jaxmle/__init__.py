"""jaxmle: maximum-likelihood fitting for any JAX log-likelihood.

Public API (see ``API.md``): :func:`fit` and :class:`FitResult`, plus the warning
classes. Everything in modules starting with ``_`` is private.
"""

from ._batch import fit_batch as fit_batch
from ._batch_result import BatchFitResult as BatchFitResult
from ._cache import enable_compilation_cache as enable_compilation_cache
from ._fit import fit as fit
from ._result import FitResult as FitResult
from ._sharding import shard_observations as shard_observations
from ._typing import ConvergenceWarning as ConvergenceWarning
from ._typing import JaxmleWarning as JaxmleWarning
from ._typing import PrecisionWarning as PrecisionWarning
from ._typing import SingularInformationWarning as SingularInformationWarning

__version__ = "0.1.0"

__all__ = [
    "BatchFitResult",
    "ConvergenceWarning",
    "FitResult",
    "JaxmleWarning",
    "PrecisionWarning",
    "SingularInformationWarning",
    "enable_compilation_cache",
    "fit",
    "fit_batch",
    "shard_observations",
]
