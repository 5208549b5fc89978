"""merlin-mdm study layer."""
