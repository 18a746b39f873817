"""The model's arguments: which are traced data, which are compile-time constants.

NumPyro runs a model with its arguments as concrete values (MCMC closes over them), so
models are written with host-side NumPy on their data: ``len(np.unique(dept))``,
``np.isnan(age)``, ``np.nonzero(...)``, boolean indexing, ``if`` on a value. fit_model
keeps that contract and still reuses its compiled programs where it can:

* an array argument is *traced* (new data of the same shapes reuses the compiled
  program) when the model runs with it abstract;
* an array the model needs as a value is a **constant** of the compiled program
  (:class:`Concrete`, hashed by content): found by tracing the model once with the
  arrays abstract (``jax.eval_shape``, nothing computed) and, if that fails, making
  them abstract one at a time, keeping those that fail as constants;
* an array with NaN/inf is always a constant: the model handles its missing entries
  itself (Titanic-style imputation); whether a NaN reaches the likelihood is checked at
  the start (:mod:`jaxmle.model.start`);
* a string array (a category column) is a constant (the model can only use it on the
  host); other non-array arguments are static (hashable) values, as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from typing import Any, Callable

import jax
import numpy as np

from jaxmle.core.params import is_number_list, shape_signature
from jaxmle.model.trace import ARRAY, Concrete, ModelCall, _total


@dataclasses.dataclass
class Arguments:
    """The model's arguments split into static leaves and arrays (with names)."""

    treedef: Any
    static: tuple        # per leaf: the static value, or ARRAY for an array
    arrays: list         # the array leaves, in order
    names: list          # their names ("male", "args[3]", "opts['x']")
    nonfinite: list      # how many NaN/inf entries each array has

    def call(self, model: Callable, constant: tuple[bool, ...] | None = None) -> ModelCall:
        """The model call with the arrays marked ``constant`` moved into the static part."""
        if constant is None or not any(constant):
            return ModelCall(model, self.treedef, self.static)
        it = iter(zip(self.arrays, constant))
        static = []
        for s in self.static:
            if s is ARRAY:
                arr, const = next(it)
                s = Concrete(arr) if const else ARRAY
            static.append(s)
        return ModelCall(model, self.treedef, tuple(static))

    def fingerprint(self, model: Callable) -> tuple:
        """The model call and every array's shape, dtype and content: a model that runs
        on the same values gives the same sites (its structure may depend on the values,
        e.g. ``len(np.unique(dept))``, so shapes alone are not enough)."""
        return (self.call(model), shape_signature(self.arrays),
                tuple(_digest(a) for a in self.arrays))

    def traced(self, constant: tuple[bool, ...] | None) -> list:
        return [a for a, c in zip(self.arrays, constant or [False] * len(self.arrays)) if not c]


def split_args(model: Callable, args: tuple, kwargs: dict) -> Arguments:
    """The arguments' tree, static leaves and arrays; raises (naming the argument) for an
    array that is not numeric, boolean or strings, and for an unhashable static value.

    Arrays: numpy, JAX, numpy scalars, anything with ``__array__`` such as a pandas
    Series; a list of numbers is an array. The rest must be hashable (it selects the
    program)."""
    tree = jax.tree_util.tree_map(lambda x: np.asarray(x) if is_number_list(x) else x,
                                  (tuple(args), dict(kwargs)),
                                  is_leaf=is_number_list)   # [1., 2.] is data, not a tuple
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    positional = _positional_names(model)
    out = Arguments(treedef, (), [], [], [])
    static = []
    for path, leaf in with_path:
        label = _arg_label(jax.tree_util.keystr(path), positional)
        if isinstance(leaf, (bool, int, float, complex, str, bytes)) or leaf is None:
            static.append(leaf)
        elif isinstance(leaf, (np.ndarray, np.generic, jax.Array)) or hasattr(leaf, "__array__"):
            arr = leaf if isinstance(leaf, jax.Array) else np.asarray(leaf)
            kind = arr.dtype.kind
            if kind in "SU":                   # a category column: the model's host code
                static.append(Concrete(arr))
                continue
            if kind not in "biufc":
                raise TypeError(
                    f"model argument {label} is an array of dtype {arr.dtype}: fit_model passes "
                    "array arguments to the model as numbers, booleans or strings; convert it "
                    "(e.g. integer codes, np.unique(x, return_inverse=True)[1])")
            static.append(ARRAY)
            out.arrays.append(arr)
            out.names.append(label)
            out.nonfinite.append(_count_nonfinite(arr))
        else:
            try:
                hash(leaf)
            except TypeError as err:
                raise TypeError(
                    f"model argument {label} of type {type(leaf).__name__} is neither "
                    "an array nor hashable: fit_model passes arrays as data and every "
                    "other argument as a static (hashable) value; pass it as an array, a tuple, "
                    "or close over it in the model") from err
            static.append(leaf)
    out.static = tuple(static)
    return out


def _count_nonfinite(arr: Any) -> int:
    if isinstance(arr, jax.core.Tracer) or arr.dtype.kind not in "fc":
        return 0
    return int(np.sum(~np.isfinite(np.asarray(arr))))


def _positional_names(model: Callable) -> list[str] | None:
    """The model's positional parameter names (None with ``*args``)."""
    try:
        params = list(inspect.signature(model).parameters.values())
    except (TypeError, ValueError):
        return None
    names = []
    for p in params:
        if p.kind == p.VAR_POSITIONAL:
            return names or None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
    return names


def _arg_label(path: str, positional: list[str] | None = None) -> str:
    """'[0][1]' -> 'male' (the model's parameter name) or 'args[1]';
    "[1]['opts'][0]" -> 'opts[0]'."""
    if path.startswith("[0]"):
        rest = path[3:]
        if positional and rest.startswith("["):
            end = rest.index("]")
            try:
                i = int(rest[1:end])
            except ValueError:
                i = -1
            if 0 <= i < len(positional):
                return positional[i] + rest[end + 1:]
        return "args" + rest
    rest = path[3:]
    if rest.startswith("['") and "']" in rest:
        end = rest.index("']")
        return rest[2:end] + rest[end + 2:]
    return "kwargs" + rest


# --------------------------------------------------------------------------- constants


def constant_arrays(model: Callable, arguments: Arguments, params: dict, held: dict,
                    terms: tuple[str, ...]) -> tuple[bool, ...]:
    """Which array arguments must be constants of the compiled program: those with NaN/inf
    entries, and those the model cannot run without as values (found by abstract traces of
    the model's log-density; nothing is computed). Cached per model and shapes."""
    forced = tuple(n > 0 for n in arguments.nonfinite)
    key = (arguments.call(model), shape_signature(arguments.arrays), forced,
           _signature(params), _signature(held), terms,
           _content(arguments.arrays, forced))
    try:
        hash(key)
    except TypeError:
        return _search(model, arguments, params, held, terms, forced)
    return _cached_search(key, model, arguments, params, held, terms, forced)


def _signature(tree: dict) -> tuple:
    return tuple((k, np.shape(v), np.asarray(v).dtype.str) for k, v in sorted(tree.items()))


def _digest(a: Any) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


def _content(arrays: list, forced: tuple) -> tuple:
    """The forced constants' contents (they are part of the traced program)."""
    return tuple(_digest(a) for a, f in zip(arrays, forced) if f)


_CACHE: dict = {}


def _cached_search(key, model, arguments, params, held, terms, forced):
    if key not in _CACHE:
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = _search(model, arguments, params, held, terms, forced)
    return _CACHE[key]


def _search(model, arguments, params, held, terms, forced) -> tuple[bool, ...]:
    n = len(arguments.arrays)
    first = _trace_error(model, arguments, params, held, terms, forced)
    if first is None:
        return forced
    everything = tuple([True] * n)
    if _trace_error(model, arguments, params, held, terms, everything) is not None:
        raise _parameter_error(first) from first
    constant = list(everything)
    for i in range(n):       # make the arrays abstract one at a time
        if forced[i]:
            continue
        constant[i] = False
        if _trace_error(model, arguments, params, held, terms, tuple(constant)) is not None:
            constant[i] = True
    return tuple(constant)


def _trace_error(model, arguments, params, held, terms, constant) -> Exception | None:
    """The error of tracing the model's log-density with the non-constant arrays and the
    parameters abstract (None if it traces)."""
    call = arguments.call(model, constant)
    traced = arguments.traced(constant)

    def density(p, arrays):
        return _total(call.trace(p, {"args": arrays, "held": held}), terms)

    try:
        jax.eval_shape(density, params, traced)
    except Exception as err:   # the model's own code: anything it raises when traced
        return err
    return None


def _parameter_error(err: Exception) -> Exception:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return TypeError(
        "the model cannot be differentiated in its parameters: running it with the "
        f"parameters as JAX tracers fails ({type(err).__name__}: {text}). fit_model needs "
        "the log-density as a JAX function of the latent/param sites: no Python control "
        "flow or NumPy on a parameter (use jnp.where, jax.lax.cond, jnp functions)")

