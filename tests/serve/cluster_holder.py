"""A real two-node Ray cluster (``ray.cluster_utils.Cluster``) held by one process, driven over stdin.

Tests start it with :class:`ClusterHolder`; it answers one JSON line per command line:

- ``deploy {"model", "port", "replicas"?, "max_replicas"?, "cpus_per_replica"?, "limits"?, ...}``: deploy
  the app with :func:`~ce_rerank_plugins.serve.run_on_ray` (Serve restarted first) and wait until it runs;
- ``status``: the deployment's replica states and, for each running replica, the node it runs on;
- ``undeploy``: shut Serve down, so its replicas' CPUs are free again (answers ``status``'s reply);
- ``remove-worker`` / ``add-worker``: take the worker node away (its raylet and every process on it are
  killed) or add a fresh one where it was taken (``add-worker`` answers the worker it has either way, so a
  test that lost the node can always put it back); ``remove-worker-once-it-embeds`` waits (up to 120 s)
  until a Ray Data actor is alive on the worker node, then takes the node away;
- ``quit`` (or end of input): shut Serve and every node down.

Each node has 1 CPU; head and worker are separate raylets on loopback, as two machines would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.serve.test_serve import _free_port

MARKER = "@cluster-holder "
NODE_ARGS = {"num_cpus": 1, "object_store_memory": 80 * 2**20}
#: Serve reports load to its autoscaler every 10 s by default; a test of autoscaling needs it each second.
FAST_METRICS = {
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
}


def _alive_actors(address: str) -> list[Any]:
    # The cluster's address, never found by looking: another Ray on this machine (a test's local Ray, or
    # one still stopping) would make the lookup ask which one is meant.
    from ray.util.state import list_actors

    return list(list_actors(address=address, filters=[("state", "=", "ALIVE")], detail=True, limit=1000))


def _actor_nodes(alive: list[Any]) -> list[str]:
    """Nodes where Ray Data's pool actors (``index --ray``; class "MapWorker") are alive."""
    return sorted({a.node_id for a in alive if "MapWorker" in (a.class_name or "")})


def _status(address: str) -> dict[str, Any]:
    from ray import serve

    from ce_rerank_plugins.serve._ray import APP_NAME

    alive = _alive_actors(address)
    actor_nodes = _actor_nodes(alive)
    app = serve.status().applications.get(APP_NAME)
    if app is None:
        return {"states": {}, "nodes": [], "actor_nodes": actor_nodes}
    deployment = app.deployments[APP_NAME]
    nodes = sorted(a.node_id for a in alive if "ServeReplica" in (a.class_name or "") and APP_NAME in a.class_name)
    states = dict(deployment.replica_states)
    return {"states": states, "app": str(app.status), "nodes": nodes, "actor_nodes": actor_nodes}


def _deploy(address: str, args: dict[str, Any]) -> dict[str, Any]:
    from ce_rerank_plugins.serve import RayServeSettings, ServeLimits, ray_application, run_on_ray

    settings = RayServeSettings(
        replicas=args.get("replicas", 1),
        min_replicas=args.get("replicas", 1),
        max_replicas=args.get("max_replicas"),
        cpus_per_replica=args.get("cpus_per_replica", 0.5),
        target_ongoing_requests=args.get("target_ongoing_requests", 8.0),
        upscale_delay_s=args.get("upscale_delay_s", 30.0),
        downscale_delay_s=args.get("downscale_delay_s", 600.0),
        extra_autoscaling_options=args.get("autoscaling", {}),
    )
    limits = ServeLimits(**args.get("limits", {}))
    app = ray_application(args["model"], precision="fp32", limits=limits, settings=settings)
    from ray import serve

    serve.shutdown()  # each deployment starts clean, its proxy on its own port
    run_on_ray(app, port=args["port"], proxy_location="HeadOnly")  # both nodes are 127.0.0.1 here
    return _status(address)


def _reply(reply: dict[str, Any]) -> None:
    # Ray writes to stdout too, from a thread of this process (a lost raylet says so): replies carry a marker,
    # start on a line of their own and go out in one write, so Ray's text never lands inside one (print()
    # writes the text and its newline apart, and a raylet's death notice once came between them).
    sys.stdout.write(f"\n{MARKER}{json.dumps(reply)}\n")
    sys.stdout.flush()


def main() -> None:
    os.environ.update(FAST_METRICS)  # before any node starts: every Serve process inherits it
    import ray
    from ray.cluster_utils import Cluster

    # The head's dashboard (which answers the state queries) on ports of its own: Ray's defaults may still be
    # held by another Ray on this machine.
    head_args = {**NODE_ARGS, "dashboard_port": _free_port(), "dashboard_agent_listen_port": _free_port()}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    # Cluster records its address where a plain ray.init() on this machine would find and join it (as
    # after `ray start`); forget it, so only those given the address use this cluster.
    ray._common.utils.reset_ray_address()
    worker = cluster.add_node(**NODE_ARGS)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    head_id = ray.get_runtime_context().get_node_id()
    _reply({"address": cluster.address, "head": head_id, "worker": worker.node_id})
    try:
        for line in sys.stdin:
            command, _, rest = line.strip().partition(" ")
            started = time.monotonic()
            if command == "deploy":
                reply: dict[str, Any] = _deploy(cluster.address, json.loads(rest))
            elif command == "status":
                reply = _status(cluster.address)
            elif command == "undeploy":
                from ray import serve

                serve.shutdown()
                reply = _status(cluster.address)
            elif command == "remove-worker":
                cluster.remove_node(worker, allow_graceful=False)
                reply = {"removed": worker.node_id}
            elif command == "remove-worker-once-it-embeds":
                reply = {"removed": None}
                while time.monotonic() - started < 120:
                    # Polled here: no round trip between seeing and removing.
                    if worker.node_id in _actor_nodes(_alive_actors(cluster.address)):
                        cluster.remove_node(worker, allow_graceful=False)
                        reply = {"removed": worker.node_id}
                        break
                    time.sleep(0.1)
            elif command == "add-worker":
                if worker not in cluster.worker_nodes:  # Cluster.remove_node took it out of that set
                    worker = cluster.add_node(**NODE_ARGS)
                    cluster.wait_for_nodes()
                reply = {"worker": worker.node_id}
            elif command == "quit":
                break
            else:
                reply = {"error": f"unknown command {command!r}"}
            reply["seconds"] = time.monotonic() - started
            _reply(reply)
    finally:
        from ray import serve

        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()


class ClusterHolder:
    """The holder process, seen from a test: its address and node ids, and a ``send`` for commands."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.serve.cluster_holder"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its raylets and workers are one process group, stopped as one
        )
        hello = self._read()
        self.address: str = hello["address"]
        self.head: str = hello["head"]
        self.worker: str = hello["worker"]

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                msg = f"the cluster holder exited ({self.process.wait()})"
                raise RuntimeError(msg)
            if line.startswith(MARKER):
                return dict(json.loads(line[len(MARKER) :]))
            sys.stderr.write(line)  # Ray's own output, shown with the test's

    def send(self, command: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + (" " + json.dumps(payload) if payload else "") + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        """End of input: the holder shuts Serve and every node down; whatever is left is killed."""
        try:
            if self.process.poll() is None:
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(60)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, 9)
                self.process.wait(10)


if __name__ == "__main__":
    main()
