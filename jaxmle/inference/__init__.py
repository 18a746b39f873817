"""Inference on a fit: profiles, bootstrap, delta method, LRT, Laplace, summary tables."""
