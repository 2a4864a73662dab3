"""serve_ray: the ``featx serve`` app on Ray Serve, ``replicas`` copies behind Ray's proxy.

Each replica builds the very app of :func:`featx.serve.create_serve_app` (``@serve.ingress``, the
app made in the replica, the model built and warmed there before it takes traffic), so routes,
limits, answers and the in-replica dynamic batching are the same as the local engine's; Ray
spreads requests over the replicas (up to ``max_ongoing_requests`` each, enough to fill a batch).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from featx.serve import ServeSettings

APP_NAME = "featx"


class FeatxReplica:
    """One replica: the featx serve app, built and warmed in the replica's process."""

    def __init__(self, bundle: str, store: str | None, settings: dict[str, Any],
                 weights: str | None, token: str | None) -> None:
        from featx.serve import create_serve_app

        self._app = create_serve_app(bundle, store, ServeSettings(**settings), weights, token,
                                     load_now=True)

    def __serve_build_asgi_app__(self):
        return self._app


def deployment(bundle: str | os.PathLike, store: str | os.PathLike | None = None,
               settings: ServeSettings = ServeSettings(), weights: str | None = None,
               token: str | None = None, replicas: int = 1, num_cpus: float = 1.0):
    """The bound Ray Serve application (``serve.run(deployment(...))``)."""
    from ray import serve

    settings.check()
    ingress = serve.ingress()(FeatxReplica)
    dep = serve.deployment(ingress, name="FeatxServe", num_replicas=replicas,
                           max_ongoing_requests=max(8, 2 * settings.max_batch),
                           ray_actor_options={"num_cpus": num_cpus})
    return dep.bind(str(bundle), None if store is None else str(store), settings.as_dict(),
                    weights, token)


def run_ray(bundle, store=None, settings: ServeSettings = ServeSettings(), weights=None,
            token=None, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
            address: str | None = None, num_cpus: float = 1.0, ready=None) -> None:
    """Start Ray (``address``: join that cluster; else a local instance), deploy, serve until
    SIGINT/SIGTERM, then shut Serve down (its proxy drains in-flight requests)."""
    # Ray's C++ failure handler would catch SIGTERM, print a stack trace and abort (exit 134)
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    import ray
    from ray import serve

    from featx.engine_ray import quiet_ray

    quiet_ray()
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its start-up notices
    stop = threading.Event()

    def on_signal(*_) -> None:
        stop.set()

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, on_signal) for s in handled}
    started = not ray.is_initialized()
    try:
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level="WARNING")
            for s in handled:  # ray.init installs a SIGTERM handler of its own (exit 15)
                signal.signal(s, on_signal)
        serve.start(http_options={"host": host, "port": port})
        if not stop.is_set():
            serve.run(deployment(bundle, store, settings, weights, token, replicas, num_cpus),
                      name=APP_NAME, route_prefix="/")
        if ready and not stop.is_set():
            ready()
        while not stop.wait(1.0):  # a timeout keeps the main thread responsive to signals
            pass
    finally:
        serve.shutdown()
        if started:
            ray.shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)
