"""The MDM pack: masked discrete diffusion tasks, denoiser, training, samplers and evaluation (PyTorch).

Submodules are imported explicitly (``from merlin_mdm.mdm.tasks import make_task``) so importing this
package does not load torch.
"""

__all__: list[str] = []
