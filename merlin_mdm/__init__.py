"""merlin-mdm: Merlin/Maestro-style ensemble workflows for masked discrete diffusion model experiments."""

__all__ = ["__version__"]

__version__ = "0.1.0"
