"""Turning results into answers: the verdict per quadrant (chosen on validation), figures."""
