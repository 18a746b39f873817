"""The four-panel diagnostic plot (matplotlib is an optional extra)."""

import dataclasses
import sys

import numpy as np
import numpyro.distributions as dist
import pytest

import jaxmle as jm
from shared import normal

N = 200  # the sample sizes of test_distributions.py: its compiled fits are reused


@pytest.fixture(scope="module")
def continuous():
    x = np.random.default_rng(3).gamma(2.5, 1.5, N)
    return jm.compare_distributions(x, [dist.Gamma, dist.Weibull])


def _is_png(path):
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_four_panels_for_several_candidates_written_to_png(tmp_path, continuous):
    pytest.importorskip("matplotlib")
    path = tmp_path / "fit.png"
    from jaxmle.plots import plot_fit

    fig = plot_fit(continuous, path=str(path))
    assert path.stat().st_size > 20_000 and _is_png(path)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Data and fitted densities", "Q–Q plot", "P–P plot", "Empirical and fitted CDFs"]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert sorted(legend) == ["Gamma", "Weibull", "data"]
    # the Q–Q points of the best fit lie near the diagonal: fitted quantiles vs sorted data
    qq = fig.axes[1].lines[0].get_xydata()
    assert np.corrcoef(qq[:, 0], qq[:, 1])[0, 1] > 0.99


def test_discrete_fit_and_the_convenience_method(tmp_path):
    pytest.importorskip("matplotlib")
    k = np.random.default_rng(20).poisson(3.5, N)
    res = jm.fit_distribution(dist.Poisson, k)
    path = tmp_path / "poisson.svg"
    fig = res.plot(str(path))
    assert path.stat().st_size > 10_000
    assert fig.axes[0].get_title() == "Data and fitted probabilities"


def test_refuses_vector_data_and_mixed_samples(continuous):
    pytest.importorskip("matplotlib")
    from jaxmle.plots import plot_fit

    vector = dataclasses.replace(continuous["Gamma"], data=np.ones((N, 2)))
    with pytest.raises(ValueError, match="univariate"):
        plot_fit(vector)
    other = jm.fit_distribution(dist.Gamma, np.random.default_rng(4).gamma(2.0, 1.0, N))
    with pytest.raises(ValueError, match="same data"):
        plot_fit([continuous["Gamma"], other])


def test_clear_message_without_matplotlib(monkeypatch, continuous):
    from jaxmle import plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'jaxmle\[plot\]'"):
        plots.plot_fit(continuous)


def test_profile_curves_with_both_intervals(tmp_path):
    pytest.importorskip("matplotlib")
    from numpyro.distributions import constraints

    from jaxmle.plots import plot_profile

    x = np.random.default_rng(5).normal(1.0, 2.0, 30)
    res = jm.fit(normal, x, {"mu": 0.0, "sigma": 1.0},
                 constraints={"sigma": constraints.positive})
    path = tmp_path / "profile.png"
    fig = plot_profile(res, path=str(path))
    assert _is_png(path) and len([ax for ax in fig.axes if ax.get_visible()]) == 2
    ax = fig.axes[1]
    prof = res.profile("sigma")
    assert ax.get_xlabel() == "sigma" and f"{prof.lower:.4g}" in ax.get_title()
    vertical = sorted(round(float(line.get_xdata()[0]), 9) for line in ax.lines
                      if len(set(line.get_xdata())) == 1)
    for end in (prof.lower, prof.upper, *prof.wald):
        assert round(end, 9) in vertical
    assert prof.plot(str(tmp_path / "one.svg")).axes[0].get_xlabel() == "sigma"
