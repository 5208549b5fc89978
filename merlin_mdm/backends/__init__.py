"""merlin-mdm backends layer."""
