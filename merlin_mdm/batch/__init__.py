"""merlin-mdm batch layer."""
