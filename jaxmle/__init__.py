"""jaxmle: maximum-likelihood fitting for any JAX log-likelihood.

Public API (the contract is ``docs/API.md`` in the repository): :func:`fit`,
:func:`fit_batch`, :func:`stack_datasets`, :func:`lrt`, :func:`fit_model`,
:func:`fit_distribution`, :func:`compare_distributions` and the result classes
(:class:`FitResult`, :class:`BatchFitResult`, ...), plus the warning classes.
Everything else is private: the subpackages (``core``, ``results``, ``fitting``,
``inference``, ``random``, ``model``, ``distributions``) are laid out in
``docs/ARCHITECTURE.md``.
"""

import jaxmle.inference.bootstrap as _bootstrap  # noqa: F401  (registers FitResult.bootstrap)
import jaxmle.inference.delta as _delta  # noqa: F401  (registers FitResult.delta)
import jaxmle.inference.laplace as _laplace  # noqa: F401  (registers FitResult.laplace)
import jaxmle.inference.profile as _profile  # noqa: F401  (registers FitResult.profile)
import jaxmle.inference.summary as _summary  # noqa: F401  (registers FitResult.summary)
from jaxmle._api import fit as fit
from jaxmle._api import fit_batch as fit_batch
from jaxmle.core.typing import ConvergenceWarning as ConvergenceWarning
from jaxmle.core.typing import JaxmleWarning as JaxmleWarning
from jaxmle.core.typing import PrecisionWarning as PrecisionWarning
from jaxmle.core.typing import SingularInformationWarning as SingularInformationWarning
from jaxmle.distributions import compare_distributions as compare_distributions
from jaxmle.distributions import fit_distribution as fit_distribution
from jaxmle.distributions.compare import DistributionComparison as DistributionComparison
from jaxmle.distributions.result import DistributionFit as DistributionFit
from jaxmle.fitting.cache import enable_compilation_cache as enable_compilation_cache
from jaxmle.fitting.data import stack_datasets as stack_datasets
from jaxmle.fitting.sharding import shard_observations as shard_observations
from jaxmle.inference.lrt import lrt as lrt
from jaxmle.model.numpyro_model import fit_model as fit_model
from jaxmle.results.batch import BatchFitResult as BatchFitResult
from jaxmle.results.result import FitResult as FitResult

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
