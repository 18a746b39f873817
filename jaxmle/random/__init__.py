"""Random effects integrated out by the Laplace approximation."""
