"""This gateway as other gateways see it: an instance id and a lease in Redis that says it is alive.

Several gateways may share one Redis (a restart, a rolling update, replicas), and what one starts
must be followed by exactly one of them: each unfinished job names the instance that follows it
(`JobRecord.gateway`), and a deployment being loaded names its loader. The instance's lease
(`chatforge:gateway:<id>`, TTL `ttl_s`) is refreshed by the job watcher every few seconds
(`JobService.watch`) and deleted at a clean exit. Another gateway takes over what an instance
owned once the instance is gone: its lease expired or was released, or, on the same host, its
process is known dead (then at once, without waiting for the TTL).
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from chatforge.lifetime import ProcessRef
from gateway import redis_keys

log = logging.getLogger(__name__)

LEASE_TTL_S = 15  # ~7 heartbeats of the 2 s job watcher: a loaded host may miss a few


class GatewayInstance:
    def __init__(self, redis: Any, *, ttl_s: int = LEASE_TTL_S):
        self.redis = redis
        self.ttl_s = ttl_s
        self.process = ProcessRef.current()
        self.id = f"gw-{self.process.host}-{self.process.pid}-{secrets.token_hex(4)}"
        self.heartbeat()

    def heartbeat(self) -> None:
        """Renew this instance's lease (the job watcher calls it every few seconds)."""
        self.redis.set(redis_keys.gateway(self.id), json.dumps(self.process.to_dict()), ex=self.ttl_s)

    def alive(self, instance_id: str) -> bool:
        """Whether the gateway `instance_id` still runs: its lease stands and, when it ran on this
        host, its process does too."""
        if instance_id == self.id:
            return True
        if not instance_id:
            return False
        raw = self.redis.get(redis_keys.gateway(instance_id))
        if raw is None:
            return False
        try:
            process = ProcessRef.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            return True  # a newer gateway's format: trust its lease
        if process.here and not process.running():
            log.info("gateway %s died without releasing its lease (pid %d)", instance_id, process.pid)
            self.redis.delete(redis_keys.gateway(instance_id))
            return False
        return True

    def release(self) -> None:
        """A clean exit: successors take over at once instead of after the TTL."""
        self.redis.delete(redis_keys.gateway(self.id))
