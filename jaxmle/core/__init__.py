"""Pure, traceable pieces: parameter space, objective, solvers, inference at an optimum."""
