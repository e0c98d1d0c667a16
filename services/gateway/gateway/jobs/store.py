"""Job records in Redis: one JSON string per job, an index sorted by creation time (capped)."""

from __future__ import annotations

import json
from typing import Any

from gateway import redis_keys
from gateway.jobs.spec import JobRecord


class JobStore:
    def __init__(self, redis: Any, *, ttl_s: int, max_jobs: int):
        self.redis = redis
        self.ttl_s = ttl_s
        self.max_jobs = max_jobs

    def put(self, record: JobRecord) -> None:
        """Write a record; a finished job's record and events expire after the TTL."""
        pipe = self.redis.pipeline()
        ttl = self.ttl_s if record.terminal else None
        pipe.set(redis_keys.job(record.id), json.dumps(record.to_dict()), ex=ttl)
        pipe.zadd(redis_keys.JOB_INDEX, {record.id: record.created})
        if ttl:
            pipe.expire(redis_keys.job_events(record.id), ttl)
            pipe.delete(redis_keys.job_process(record.id))
        pipe.zremrangebyrank(redis_keys.JOB_INDEX, 0, -self.max_jobs - 1)
        pipe.execute()

    def claim(self, job_id: str, previous: str, gateway: str) -> JobRecord | None:
        """Make `gateway` the job's follower if `previous` still is (compare and set); the claimed
        record, or None when another gateway got there first or the job ended meanwhile."""
        from redis.exceptions import WatchError

        key = redis_keys.job(job_id)
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                record = JobRecord.from_dict(json.loads(raw)) if raw else None
                if record is None or record.terminal or record.gateway != previous:
                    return None
                record.gateway = gateway
                pipe.multi()
                pipe.set(key, json.dumps(record.to_dict()))
                pipe.execute()
                return record
            except WatchError:
                return None

    def process(self, job_id: str) -> dict[str, Any] | None:
        """Where the job's wrapper said the job runs (a ProcessRef as a dict), if it said."""
        raw = self.redis.get(redis_keys.job_process(job_id))
        return json.loads(raw) if raw else None

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.redis.get(redis_keys.job(job_id))
        return JobRecord.from_dict(json.loads(raw)) if raw else None

    def recent(self, limit: int) -> list[JobRecord]:
        """Newest first; ids whose record expired are dropped from the index."""
        ids = self.redis.zrevrange(redis_keys.JOB_INDEX, 0, limit - 1)
        raws = self.redis.mget([redis_keys.job(i) for i in ids]) if ids else []
        gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
        if gone:
            self.redis.zrem(redis_keys.JOB_INDEX, *gone)
        return [JobRecord.from_dict(json.loads(raw)) for raw in raws if raw]
