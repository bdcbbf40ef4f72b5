"""The same ASGI app as a Ray Serve deployment: replicas, autoscaling, a local Ray or an existing cluster.

Nothing is forked: each replica builds :func:`~ce_rerank_plugins.serve.create_app` around its own core
reranker, whose micro-batcher batches the replica's concurrent requests. Ray Serve routes, restarts
dead replicas and scales; we write no scheduler.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, get_args

from ce_rerank_plugins._files import portable_model_name
from ce_rerank_plugins._optional import require

require("ray.serve", "ray", purpose="ce-rerank serve --ray")
require("fastapi", "serve", purpose="ce-rerank serve --ray")

from ray import serve  # noqa: E402

from ce_rerank_plugins.core import Precision  # noqa: E402
from ce_rerank_plugins.serve._app import ServeLimits, create_app  # noqa: E402

#: The Ray Serve application and deployment name.
APP_NAME = "ce-rerank"
#: Settings of this process that each replica gets too (offline mode, third-party noise), also on a cluster.
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")
#: Serve's own logs: warnings only, no access line per request.
QUIET_LOGS = {"log_level": "WARNING", "enable_access_log": False}


def forwarded_env() -> dict[str, str]:
    """The environment variables of :data:`FORWARDED_ENV` that are set here."""
    return {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}


@dataclass(frozen=True)
class RayServeSettings:
    """How the deployment scales.

    Args:
        replicas: Fixed replica count (ignored when ``max_replicas`` is set).
        min_replicas: Autoscaling floor (with ``max_replicas``).
        max_replicas: Autoscaling ceiling; None for a fixed ``replicas``.
        target_ongoing_requests: Autoscaling target per replica.
        cpus_per_replica: CPUs Ray reserves for each replica; also its torch thread count (at least 1).
        max_ongoing_requests: Requests one replica holds at once (its micro-batcher merges them).
        upscale_delay_s: With autoscaling, how long load must stay above target before a replica is
            added (Ray Serve's default).
        downscale_delay_s: How long load must stay below target before one is removed (Serve's default:
            ten minutes, so a lull between bursts keeps the replicas warm).
        extra_actor_options: More ``ray_actor_options`` for each replica (``{"num_gpus": 1}``).
        extra_autoscaling_options: More fields of Serve's ``autoscaling_config`` (``look_back_period_s``).
    """

    replicas: int = 1
    min_replicas: int = 1
    max_replicas: int | None = None
    target_ongoing_requests: float = 8.0
    cpus_per_replica: float = 1.0
    max_ongoing_requests: int = 32
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    extra_actor_options: dict[str, Any] = field(default_factory=dict)
    extra_autoscaling_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.min_replicas < 0:
            msg = f"need replicas >= 1 and min_replicas >= 0, got {self.replicas} and {self.min_replicas}"
            raise ValueError(msg)
        if self.max_replicas is not None and self.max_replicas < max(1, self.min_replicas):
            msg = f"max_replicas ({self.max_replicas}) must be >= max(1, min_replicas={self.min_replicas})"
            raise ValueError(msg)
        if not self.cpus_per_replica > 0 or self.max_ongoing_requests < 1 or not self.target_ongoing_requests > 0:
            msg = "cpus_per_replica, max_ongoing_requests and target_ongoing_requests must be positive"
            raise ValueError(msg)
        if not (self.upscale_delay_s >= 0 and self.downscale_delay_s >= 0):
            msg = f"autoscaling delays must be >= 0 s, got {self.upscale_delay_s} and {self.downscale_delay_s}"
            raise ValueError(msg)

    def deployment_options(self) -> dict[str, Any]:
        """The keyword arguments of ``serve.deployment`` these settings stand for."""
        actor_options: dict[str, Any] = {"num_cpus": self.cpus_per_replica}
        env = forwarded_env()
        if env:
            actor_options["runtime_env"] = {"env_vars": env}
        options: dict[str, Any] = {
            "name": APP_NAME,
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": {**actor_options, **self.extra_actor_options},
            "logging_config": QUIET_LOGS,
        }
        if self.max_replicas is None:
            options["num_replicas"] = self.replicas
        else:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
                **self.extra_autoscaling_options,
            }
        return options


class RerankReplica:
    """One replica: loads the shared reranker before it takes traffic, then serves the common app."""

    def __init__(self, model: str | None, precision: Precision, limits: ServeLimits, threads: int) -> None:
        from ce_rerank_plugins.core import CrossEncoderReranker, default_model, set_threads

        set_threads(threads)  # one replica per reserved CPU share, not one thread per core each
        # Loaded here, in the constructor: Ray routes to a replica only once it is built, so a replacement
        # replica never answers 503 "loading" to traffic that a healthy one could take.
        self.reranker = CrossEncoderReranker(model or default_model(), precision=precision)
        self._app = create_app(self.reranker, limits=limits)

    def __serve_build_asgi_app__(self) -> Any:
        return self._app


def ray_application(
    model: str | os.PathLike[str] | None = None,
    *,
    precision: Precision = "auto",
    limits: ServeLimits | None = None,
    settings: RayServeSettings | None = None,
) -> Any:
    """A Ray Serve application (``serve.run`` it) serving ``model`` in the rerank request shape.

    Args:
        model: Cross-encoder name or path, readable on every node; None resolves the default there.
        precision: The core's precision (probe-checked on each replica).
        limits: Request limits, as for :func:`~ce_rerank_plugins.serve.create_app`.
        settings: Replicas, autoscaling and CPUs per replica.
    """
    if precision not in get_args(Precision):  # here, not in every replica's failing constructor
        msg = f"precision must be one of {list(get_args(Precision))}, got {precision!r}"
        raise ValueError(msg)
    if model is not None:
        model = portable_model_name(model)
    settings = settings or RayServeSettings()
    threads = max(1, math.floor(settings.cpus_per_replica))
    deployment: Any = serve.deployment(serve.ingress()(RerankReplica), **settings.deployment_options())
    return deployment.bind(model, precision, limits or ServeLimits(), threads)


def run_on_ray(
    application: Any,
    *,
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    num_cpus: int | None = None,
    blocking: bool = False,
    proxy_location: str = "EveryNode",
) -> Any:
    """Start (or join) Ray, then Serve's HTTP proxy on ``host:port``, and deploy ``application``.

    Args:
        application: From :func:`ray_application`.
        address: An existing cluster (``"auto"`` or ``"ray://head:10001"``); None starts a local Ray.
        host: Address the HTTP proxy binds.
        port: Its port.
        num_cpus: CPUs of a local Ray (ignored with ``address``).
        blocking: Block until SIGINT or SIGTERM, then shut Serve down (the CLI), instead of returning at once.
        proxy_location: Serve's HTTP proxies: ``"EveryNode"`` (one on each node that holds a replica, for a
            load balancer in front of the nodes) or ``"HeadOnly"`` (one, on the head node; also where
            several nodes share one address, as in a test cluster on one machine).
    """
    if proxy_location not in ("EveryNode", "HeadOnly"):
        msg = f"proxy_location must be 'EveryNode' or 'HeadOnly', got {proxy_location!r}"
        raise ValueError(msg)
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    stop = threading.Event()
    # Installed before Serve starts (and after ray.init, which installs its own): a stop signal that
    # arrives while the app is still deploying is honoured too, once it is up.
    previous = (
        {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)} if blocking else {}
    )
    try:
        serve.start(http_options={"host": host, "port": port}, proxy_location=proxy_location, logging_config=QUIET_LOGS)
        handle = serve.run(application, name=APP_NAME, route_prefix="/", blocking=False, logging_config=QUIET_LOGS)
        while blocking and not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if blocking:
            serve.shutdown()  # type: ignore[no-untyped-call]
    return handle
