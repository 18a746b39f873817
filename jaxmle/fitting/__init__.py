"""Host-side preparation and the compiled fit programs (single, batch, multi-start)."""
