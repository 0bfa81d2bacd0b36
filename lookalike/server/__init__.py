"""The search service: FastAPI app (app.py), micro-batching, thumbnails and the web page (static/)."""
