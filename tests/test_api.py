"""The public surface, and the kernel's purity (jit/vmap pass through it)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints

import jaxmle as jm
import jaxmle.core.space as _space
import jaxmle.fitting.kernel as _kernel
from shared import normal


def test_public_names():
    assert set(jm.__all__) == {
        "BatchFitResult", "BoundaryWarning", "ConvergenceWarning", "FitResult", "JaxmleWarning", "PrecisionWarning",
        "SingularInformationWarning", "enable_compilation_cache", "disable_compilation_cache",
        "warmup", "fit", "fit_batch", "lrt",
        "shard_observations",
        "DistributionComparison", "DistributionFit", "compare_distributions", "fit_distribution",
        "fit_model", "stack_datasets",
    }
    for name in jm.__all__:
        assert hasattr(jm, name)
    assert issubclass(jm.ConvergenceWarning, jm.JaxmleWarning)
    assert issubclass(jm.BoundaryWarning, jm.JaxmleWarning)


def test_the_fit_kernel_vmaps_to_the_same_answers_as_single_fits():
    xs = np.random.default_rng(0).normal(2.0, 1.5, size=(6, 30))
    leaves, treedef, names = _kernel.prepare_init({"mu": 0.0, "sigma": 1.0}, np.dtype("float64"))
    space = _space.build_space(leaves, names, treedef, {"sigma": constraints.positive})
    config = _kernel.KernelConfig(normal, space, "newton", False, "float64")
    kernel = functools.partial(_kernel.fit_kernel, config)
    batched = jax.jit(jax.vmap(kernel, in_axes=(0, None, None, None, None)))(
        xs, leaves, None, jnp.asarray(1e-8), jnp.asarray(200, jnp.int32))
    assert batched.params["mu"].shape == (6,) and batched.cov.shape == (6, 2, 2)
    assert batched.param_names == ("mu", "sigma")
    for i, x in enumerate(xs):
        single = jm.fit(normal, x, init={"mu": 0.0, "sigma": 1.0},
                        constraints={"sigma": constraints.positive})
        np.testing.assert_allclose(batched.params["mu"][i], single.params["mu"], rtol=1e-10)
        np.testing.assert_allclose(batched.cov[i], single.cov, rtol=1e-8, atol=1e-15)
        assert bool(batched.converged[i])
