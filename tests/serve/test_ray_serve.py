"""Ray Serve settings and the ``serve --ray`` command on a local Ray.

Serving itself (equality with the core, errors through Serve's proxy, a node lost under load,
autoscaling) is tested on a real two-node cluster in ``test_ray_cluster.py``.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.serve.test_serve import _free_port

pytestmark = pytest.mark.starts_ray


def test_ray_settings_are_checked_and_translated():
    from ce_rerank_plugins.serve._ray import RayServeSettings

    fixed = RayServeSettings(replicas=3, cpus_per_replica=2).deployment_options()
    assert fixed["num_replicas"] == 3 and fixed["ray_actor_options"]["num_cpus"] == 2
    assert "autoscaling_config" not in fixed
    scaling = RayServeSettings(min_replicas=1, max_replicas=4, target_ongoing_requests=4).deployment_options()
    assert scaling["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 4,
        "upscale_delay_s": 30.0,
        "downscale_delay_s": 600.0,
    }
    assert "num_replicas" not in scaling
    with pytest.raises(ValueError, match="max_replicas"):
        RayServeSettings(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError, match="replicas >= 1"):
        RayServeSettings(replicas=0)
    with pytest.raises(ValueError, match="cpus_per_replica"):
        RayServeSettings(cpus_per_replica=0)
    with pytest.raises(ValueError, match="autoscaling delays"):
        RayServeSettings(max_replicas=2, downscale_delay_s=float("nan"))
    from ce_rerank_plugins.serve._ray import run_on_ray

    with pytest.raises(ValueError, match="proxy_location must be 'EveryNode' or 'HeadOnly'"):
        run_on_ray(None, proxy_location="Nowhere")  # refused before Ray starts


def test_ray_application_checks_its_arguments_before_any_replica_starts(tmp_path, monkeypatch):
    from ce_rerank_plugins.serve._ray import ray_application

    with pytest.raises(ValueError, match="precision must be one of"):
        ray_application("m", precision="fp8")  # type: ignore[arg-type]
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    bound = ray_application("model")  # a relative local path becomes absolute for the replicas
    assert bound._bound_deployment.init_args[0] == str((tmp_path / "model").resolve())
    assert ray_application("org/hub-model")._bound_deployment.init_args[0] == "org/hub-model"


def test_autoscaling_settings_are_accepted_by_ray_serve():
    from ce_rerank_plugins.serve._ray import RayServeSettings, ray_application

    settings = RayServeSettings(min_replicas=1, max_replicas=4, target_ongoing_requests=4, cpus_per_replica=2)
    deployment = ray_application("m", settings=settings)._bound_deployment  # Ray validates the config here
    autoscaling = deployment._deployment_config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas, autoscaling.target_ongoing_requests) == (1, 4, 4.0)
    assert deployment.ray_actor_options["num_cpus"] == 2
    assert deployment.init_args[3] == 2  # the replica's torch threads follow its CPUs


def test_the_serve_command_on_ray_stops_cleanly_on_sigterm(tiny_ce_path):
    # A container stop or `kill` sends SIGTERM: the server shuts Serve down and exits 0, no crash dump.
    import os
    import signal
    import subprocess
    import sys

    port = _free_port()
    cli = [sys.executable, "-m", "ce_rerank_plugins.cli", "serve", "--ray", "--model", str(tiny_ce_path)]
    env = {**os.environ, "RAY_ADDRESS": ""}  # its own local Ray, not the test session's
    server = subprocess.Popen(
        [*cli, "--port", str(port), "--precision", "fp32"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 600  # a local Ray and Serve start slowly on 2 busy cores
        while True:
            assert server.poll() is None, (
                f"the server exited with {server.returncode}: {server.communicate()[0][-3000:]}"
            )
            assert time.monotonic() < deadline, "the server did not answer /health within 600 s"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/rerank", json={"query": "q", "documents": ["a", "b"]})
        assert reply.status_code == 200
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, output[-3000:]
    assert "stopped" in output and "SIGTERM received" not in output
