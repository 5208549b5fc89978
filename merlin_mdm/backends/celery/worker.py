"""The module `celery worker -A` loads: the app built from the configuration in effect.

`merlin-mdm run-workers` starts ``python -m celery -A merlin_mdm.backends.celery.worker worker ...`` with
``MERLIN_MDM_CONFIG`` naming the app.yaml it resolved, so the password travels in no argument.
"""

from __future__ import annotations

from merlin_mdm.backends.celery.app import make_app
from merlin_mdm.config import load_config

__all__ = ["app"]

app = make_app(load_config())
