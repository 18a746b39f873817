"""Results as plain pytrees, and what makes them leave Python."""
