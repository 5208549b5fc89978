"""The distributed backend: Celery workers fed through a Redis broker.

Modules:
    backend     `CeleryBackend` (registered as ``celery``): queues a study, reads its status; imports no Celery.
    app         the Celery application, its settings and its two thin tasks (``unit``, ``expand``).
    scheduling  what a task does, as plain functions (run a unit, record it, release its children).
    workers     `run-workers` command lines and broker inspection (queues, purge, shutdown).
    worker      the module ``celery -A`` loads: the app built from the configuration in effect.

Nothing is imported here, so ``import merlin_mdm.backends`` never imports Celery.
"""
