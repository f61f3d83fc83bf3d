"""`tunesmith serve`: an HTTP job server on top of the public API (FastAPI + uvicorn, optional extras).

store.py keeps jobs in SQLite, worker.py owns the device, app.py wires the app: routes/ holds the routes
(compat.py mlx-audiogen's, jobs.py tunesmith's own), bodies.py the JSON bodies (POST /api/jobs's fields
from the family table), views.py what clients see of a job, jobs.py what the routes share, handlers.py
the one-line errors, media.py the audio answers; guard.py the checks every request passes, spec.py turns
a request body into a stored job and back into a Request. Nothing here imports the CLI."""
