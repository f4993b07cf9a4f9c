"""Post-install fixes for the CPU environment (run by the Makefile after pip)."""
