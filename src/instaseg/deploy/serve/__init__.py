"""`instaseg serve`: the model behind an HTTP API that PaddleX clients call unchanged.

`create_app(config)` builds the FastAPI application (PaddleX's ``/instance-segmentation``, the native
``/predict``, health, readiness, Prometheus metrics, OpenAPI, a page at ``/``); `run` serves it with uvicorn and
several worker processes; `instaseg.deploy.serve.ray_app` runs the same application on Ray Serve.
"""

from instaseg.deploy.serve.config import ServeConfig

__all__ = ["ServeConfig"]
