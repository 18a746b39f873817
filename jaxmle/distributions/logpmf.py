r"""Exact log-pmfs for distribution fitting where NumPyro's ``log_prob`` is inexact.

NumPyro's ``GammaPoisson.log_prob``, which ``NegativeBinomial2`` and
``NegativeBinomialProbs`` inherit, goes through ``jax.scipy.special.betaln``,
which is off by up to ~1e-6 for moderate arguments (e.g. ``betaln(5, 9)``; scipy's
``betaln`` is exact there). Summed over a sample, the maximised log-likelihood of a
negative-binomial fit comes out ~1e-5 low. Here the same log-pmf is written with
``gammaln`` (exact to rounding), in each class's own parameters:

* ``NegativeBinomial2(mean μ, concentration r)``:
  log p(k) = lgamma(k + r) − lgamma(r) − lgamma(k + 1) + r·log(r/(r + μ)) + k·log(μ/(r + μ));
* ``NegativeBinomialProbs(total_count r, probs p)`` (NumPyro's p: mean r·p/(1 − p)):
  … + r·log(1 − p) + k·log(p);
* ``GammaPoisson(concentration α, rate λ)``: … + α·log(λ/(1 + λ)) − k·log(1 + λ).

(``NegativeBinomialLogits.log_prob`` already uses ``gammaln``.) The fitting path
(:func:`jaxmle.distributions.fit.loglik_for`) and a fit's ``log_prob`` use these.
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
from jax.scipy.special import gammaln, xlog1py, xlogy


def _count_terms(k, r):
    return gammaln(k + r) - gammaln(r) - gammaln(k + 1.0)


def _float(*xs):
    dtype = jnp.result_type(float)
    return [jnp.asarray(x, dtype) for x in xs]


def negative_binomial2(params: dict, k: Any) -> Any:
    mu, r, k = _float(params["mean"], params["concentration"], k)
    total = r + mu
    return _count_terms(k, r) + r * (jnp.log(r) - jnp.log(total)) + xlogy(k, mu) - k * jnp.log(total)


def negative_binomial_probs(params: dict, k: Any) -> Any:
    r, p, k = _float(params["total_count"], params["probs"], k)
    return _count_terms(k, r) + xlog1py(r, -p) + xlogy(k, p)


def gamma_poisson(params: dict, k: Any) -> Any:
    a, lam, k = _float(params["concentration"], params["rate"], k)
    return _count_terms(k, a) + a * (jnp.log(lam) - jnp.log1p(lam)) - k * jnp.log1p(lam)


def exact_log_prob(cls: Any) -> Callable | None:
    """``(params, x) -> log p(x)`` for a class whose NumPyro ``log_prob`` is inexact, else None."""
    import numpyro.distributions as d

    return {d.NegativeBinomial2: negative_binomial2,
            d.NegativeBinomialProbs: negative_binomial_probs,
            d.GammaPoisson: gamma_poisson}.get(cls)
