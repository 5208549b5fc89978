"""merlin-mdm status layer."""
