"""drivers/cpu."""
