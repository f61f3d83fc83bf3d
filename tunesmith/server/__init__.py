"""`tunesmith serve`: an HTTP job server on top of the public API (FastAPI + uvicorn, optional extras).

store.py keeps jobs in SQLite, worker.py owns the device, app.py holds the routes, guard.py the checks
every request passes, spec.py turns a request body into a stored job and back into a Request."""
