"""Singer tap for Bolna."""
