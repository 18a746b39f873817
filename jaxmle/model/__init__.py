"""NumPyro models fitted as written."""
