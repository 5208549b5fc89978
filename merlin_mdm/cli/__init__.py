"""merlin-mdm cli layer."""
