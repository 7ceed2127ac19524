"""llmos.testing: hypothesis strategies and ready-made property suites for users."""
