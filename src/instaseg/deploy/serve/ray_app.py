"""The same application on Ray Serve, for a service that outgrows one machine (the ``ray`` extra).

Each replica builds the FastAPI app of `instaseg.deploy.serve.app` at start and loads its own model, so the
endpoints, limits, batching and errors are those of `instaseg serve` on uvicorn. Ray Serve adds replicas across a
cluster, autoscaling on the requests in flight, and its own proxy in front. ``/metrics`` answers for the replica
that takes the scrape; Ray's own metrics cover the whole deployment.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from instaseg.deploy.serve.config import ServeConfig

DEPLOYMENT = "instaseg"


def deployment(
    config: ServeConfig, replicas: int = 1, autoscale: tuple[int, int] | None = None, gpus_per_replica: float = 0.0
) -> Any:
    """A bound Ray Serve application serving ``config.model`` on ``replicas`` replicas, or autoscaling between
    ``autoscale`` = (min, max) replicas with the batch size as each replica's target of requests in flight."""
    from ray import serve

    settings = asdict(config)
    settings["threads"] = config.threads or 1  # a replica holds one CPU unless told otherwise: torch uses that many

    def build_app() -> Any:  # runs on each replica: the app (and its model) are made there, never pickled
        from instaseg.deploy.serve.app import create_app

        return create_app(ServeConfig(**settings))

    class InstasegService:
        """The replica: everything is in the ingress app."""

    options: dict[str, Any] = {
        "name": DEPLOYMENT,
        "ray_actor_options": {"num_cpus": settings["threads"], "num_gpus": gpus_per_replica},
        # more than a replica's queue plus a batch would be refused by the replica itself: let Ray route elsewhere
        "max_ongoing_requests": config.max_queue + config.max_batch_size,
        "graceful_shutdown_timeout_s": config.graceful_timeout_s,
        "health_check_period_s": 10,
    }
    if autoscale is not None:
        low, high = autoscale
        options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": config.max_batch_size,
        }
    else:
        options["num_replicas"] = replicas
    return serve.deployment(**options)(serve.ingress(build_app)(InstasegService)).bind()


def start(config: ServeConfig, address: str | None = None, **options: Any) -> None:
    """Start (or reuse) Ray, Serve's proxy on ``config.host:config.port``, and the application; returns once the
    replicas answer."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(deployment(config, **options), name=DEPLOYMENT, route_prefix="/")


def run_ray(config: ServeConfig, address: str | None = None, **options: Any) -> None:
    """Serve on Ray until interrupted, then shut the application down."""
    import time

    from ray import serve

    start(config, address=address, **options)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
