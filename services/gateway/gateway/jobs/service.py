"""The jobs API's logic: submit to the backend, keep records in Redis, follow and cancel jobs.

Records are the source of truth for the API and survive a gateway restart; the backend is the
source of truth for a job's state. `reconcile` asks the backend about every unfinished job (at start
and then every few seconds), so a gateway that was down while a job ran reports it correctly.

Each unfinished job is followed by one gateway instance (`JobRecord.gateway`, `gateway/instance.py`).
When that instance is gone (stopped, killed, its lease expired), the next gateway to reconcile takes
the job over: it adopts a job the backend still runs (a cluster's jobs outlive the gateway), and
ends one the backend no longer has (a local job's Ray ended with its gateway), stopping whatever of
it still runs on this host (the session `chatforge.jobrun` recorded) and recording it as failed with
why. A clean stop of a gateway whose jobs end with it records them so before it goes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from chatforge.artifacts import ArtifactStore
from chatforge.contracts.events import event_dict, parse_stream_entry
from chatforge.contracts.jobs import JobSpec
from chatforge.lifetime import ProcessRef, kill_session
from gateway import redis_keys
from gateway.errors import APIError
from gateway.instance import GatewayInstance
from gateway.jobs.backend import BackendError, BackendStatus, JobBackend, JobGone, JobRejected
from gateway.jobs.spec import STATES, JobRecord, entrypoint, new_job_id
from gateway.jobs.store import JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobEnv:
    """What a job's processes need to find the shared services."""

    redis_url: str
    artifacts_root: str

    def as_dict(self) -> dict[str, str]:
        env = {"CHATFORGE_ARTIFACTS": self.artifacts_root}
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env


class JobService:
    def __init__(
        self,
        store: JobStore,
        backend: JobBackend,
        *,
        command: str,
        env: JobEnv,
        artifacts: ArtifactStore,
        instance: GatewayInstance | None = None,
    ):
        self.store = store
        self.backend = backend
        self.command = command
        self.env = env
        self.artifacts = artifacts
        self.instance = instance or GatewayInstance(store.redis)

    def submit(self, spec: JobSpec, owner: str) -> JobRecord:
        try:
            spec = self.backend.fit(spec)  # e.g. one Ray Train worker per GPU of the job's cluster
        except JobRejected as e:
            raise APIError(400, str(e), param=e.param, code="invalid_config") from None
        job_id = new_job_id()
        config = spec.config.model_dump(mode="json", exclude_unset=True)  # the flags the request gave
        record = JobRecord(
            id=job_id, stage=spec.stage, run=spec.run, config=config, backend=self.backend.name,
            entrypoint=entrypoint(self.command, spec, job_id), owner=owner, gateway=self.instance.id,
        )  # fmt: skip
        self.store.put(record)  # first, so a crash between the two leaves a visible failed job
        try:
            record.backend_ref = self.backend.submit(record, self.env.as_dict())
        except BackendError as e:
            record.state, record.message, record.finished = "failed", str(e), time.time()
            self.store.put(record)
            raise APIError(502, f"the job backend refused the job: {e}", code="backend_error") from None
        self.store.put(record)
        log.info("job %s submitted to %s: %s", job_id, self.backend.name, record.entrypoint)
        return record

    def get(self, job_id: str, *, refresh: bool = True) -> JobRecord:
        record = self.store.get(job_id)
        if record is None:
            raise APIError(404, f"no job {job_id!r}", param="job_id", code="job_not_found")
        if refresh and not record.terminal and record.backend == self.backend.name:
            record = self._refresh(record)
        return record

    def recent(self, limit: int) -> list[JobRecord]:
        return self.store.recent(limit)

    def cancel(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        if record.terminal:
            raise APIError(409, f"job {job_id} already ended ({record.state})", code="job_finished")
        if record.backend != self.backend.name:
            raise APIError(
                409, f"job {job_id} runs on the {record.backend} backend; this gateway uses {self.backend.name}",
                code="other_backend",
            )  # fmt: skip
        try:
            self.backend.stop(record)
        except BackendError as e:
            raise APIError(502, str(e), code="backend_error") from None
        record.state, record.message, record.finished = "cancelled", "cancelled through the API", time.time()
        self.store.put(record)
        return record

    def logs(self, job_id: str) -> str:
        record = self.get(job_id, refresh=False)
        try:
            return self.backend.logs(record)
        except BackendError as e:
            raise APIError(502, str(e), code="backend_error") from None

    def artifacts_of(self, job_id: str) -> list[dict[str, Any]]:
        """The checkpoints the job's run has in the artifact store (by stage, newest last)."""
        record = self.get(job_id, refresh=False)
        from chatforge.checkpoint import read_meta

        out = []
        for name, path in self.artifacts.checkpoints():
            if name.split("/")[0] != record.run:
                continue
            meta = read_meta(path)
            out.append({"name": name, "step": meta.get("step"), "metrics": meta.get("metrics", {})})
        return out

    def reconcile(self) -> int:
        """Bring every unfinished record this gateway follows in line with the backend, and take
        over those whose gateway is gone; returns how many changed state."""
        changed = 0
        for record in self.store.recent(self.store.max_jobs):
            if record.terminal or record.backend != self.backend.name:
                continue  # another backend's job (the gateway was reconfigured): left as it was
            before = record.state
            if record.gateway == self.instance.id:
                record = self._refresh(record)
            elif self.instance.alive(record.gateway):
                continue  # another live gateway follows it
            else:
                taken = self._take_over(record)
                if taken is None:
                    continue
                record = taken
            changed += record.state != before
        return changed

    def close(self) -> None:
        """A clean stop. Jobs on a Ray that ends with this gateway are recorded as failed, saying why,
        and whatever of them is left is stopped; the lease is released, so a successor takes over
        the jobs that outlive this gateway at once."""
        ending = []
        if getattr(self.backend, "jobs_end_with_gateway", False):
            for record in self.store.recent(self.store.max_jobs):
                if not record.terminal and record.gateway == self.instance.id:
                    ending.append(record)
        try:
            self.backend.close()
        finally:
            for record in ending:
                self._end(record, "stopped with its gateway: a local job runs on the gateway's own Ray")
            self.instance.release()

    def counts(self) -> dict[str, int]:
        counts = Counter(r.state for r in self.store.recent(self.store.max_jobs))
        return {state: counts.get(state, 0) for state in STATES}

    def read_events(self, job_id: str, after: str, block_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """Events after stream id `after` ("0": from the start), waiting up to `block_ms` for new ones;
        each read through its contract (chatforge.contracts.events), one it does not know passed on as written."""
        reply = self.store.redis.xread({redis_keys.job_events(job_id): after}, count=100, block=block_ms)
        return [
            (entry_id, event_dict(parse_stream_entry(fields)))
            for _, entries in reply or []
            for entry_id, fields in entries
        ]

    def _refresh(self, record: JobRecord) -> JobRecord:
        try:
            status = self.backend.status(record)
        except JobGone as e:
            return self._end(record, str(e))
        except BackendError as e:
            log.warning("job %s: %s", record.id, e)
            return record
        return self._apply(record, status)

    def _take_over(self, record: JobRecord) -> JobRecord | None:
        """Follow a job whose gateway is gone: adopt it if the backend still has it, else end it."""
        previous = record.gateway or "(unrecorded)"
        claimed = self.store.claim(record.id, record.gateway, self.instance.id)
        if claimed is None:
            return None  # another gateway took it first, or it ended meanwhile
        try:
            status = self.backend.status(claimed)
        except JobGone as e:
            log.warning("job %s of gone gateway %s: %s; ending it", record.id, previous, e)
            return self._end(claimed, f"{e}; the gateway that ran it ({previous}) is gone")
        except BackendError as e:
            log.warning("job %s of gone gateway %s: %s; following it from now on", record.id, previous, e)
            return claimed
        log.info("adopted job %s of gone gateway %s: %s in the backend", record.id, previous, status.state)
        return self._apply(claimed, status)

    def _end(self, record: JobRecord, why: str) -> JobRecord:
        """The backend no longer runs the job: stop what is left of it here and record it failed."""
        leftover = self.store.process(record.id)
        if leftover is not None:
            process = ProcessRef.from_dict(leftover)
            if process.running():
                log.warning("job %s: stopping its leftover processes (session %d)", record.id, process.pid)
                kill_session(process.pid)
                why += f"; its leftover processes (session {process.pid}) were stopped"
        if record.started is None:  # it ran before any gateway saw it running: its first event says when
            first = self.store.redis.xrange(redis_keys.job_events(record.id), count=1)
            if first:
                record.started = int(first[0][0].split("-")[0]) / 1000
        record.state, record.message, record.finished = "failed", why, time.time()
        self.store.put(record)
        return record

    def _apply(self, record: JobRecord, status: BackendStatus) -> JobRecord:
        if status.state == record.state:
            return record
        record.state, record.message = status.state, status.message or record.message
        if status.state == "running" and record.started is None:
            record.started = time.time()
        if record.terminal:
            record.finished = time.time()
        self.store.put(record)
        return record

    async def watch(self, interval_s: float, on_counts: Any = None) -> None:
        """Renew this gateway's lease and reconcile, forever (a background task of the app);
        `on_counts` receives jobs by state."""
        while True:
            try:
                await asyncio.to_thread(self.instance.heartbeat)
                await asyncio.to_thread(self.reconcile)
                if on_counts is not None:
                    on_counts(await asyncio.to_thread(self.counts))
            except Exception:  # a Redis or backend hiccup must not end the watcher
                log.exception("job reconcile failed; retrying")
            await asyncio.sleep(interval_s)
