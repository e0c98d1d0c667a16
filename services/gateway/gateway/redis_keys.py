"""Every Redis key the gateway reads or writes, in one place. All live under `chatforge:`.

| key | type | what | bounded by |
| --- | --- | --- | --- |
| `chatforge:apikey:<sha256>` | hash | one API key: id, name, scopes, created | revoke deletes it |
| `chatforge:apikeys` | hash | key id -> sha256, to list and revoke by id | one entry per live key |
| `chatforge:apikey-pepper` | string | HMAC of a constant under the key pepper a gateway checks keys with, so `chatforge keys create` refuses another pepper | one key, set at start |
| `chatforge:ratelimit:<key id>:<kind>` | hash | token bucket (tokens, ms): kind requests or tokens | expires when full again |
| `chatforge:conv:<owner>:<id>` | string | one conversation (JSON) | TTL conversation_ttl_s |
| `chatforge:convs:<owner>` | zset | conversation ids by last update | capped, TTL conversation_ttl_s |
| `chatforge:job:<id>` | string | one job record (JSON) | TTL job_ttl_s once finished |
| `chatforge:jobs` | zset | job ids by creation time | capped at max_jobs_listed |
| `chatforge:job:<id>:events` | stream | progress events, written by the trainer | MAXLEN, TTL once finished |
| `chatforge:job:<id>:process` | string | the session a local job runs in (`chatforge.jobrun`), as a ProcessRef | deleted once finished |
| `chatforge:gateway:<instance>` | string | a live gateway's lease: its ProcessRef (`gateway/instance.py`) | TTL lease_ttl_s, deleted at exit |
| `chatforge:deployment` | string | the checkpoint served now (JSON) | one key |

`<owner>` is the API key id ("local" when keys are off). The job events key format is shared with
the trainer through `chatforge.contracts.events`, the job process key with the job wrapper through
`chatforge.contracts.jobs`.
"""

from __future__ import annotations

from chatforge.contracts.events import job_events_stream
from chatforge.contracts.jobs import job_process_key

PREFIX = "chatforge"
API_KEY_INDEX = f"{PREFIX}:apikeys"
API_KEY_PEPPER = f"{PREFIX}:apikey-pepper"
JOB_INDEX = f"{PREFIX}:jobs"
DEPLOYMENT = f"{PREFIX}:deployment"


def api_key(digest: str) -> str:
    return f"{PREFIX}:apikey:{digest}"


def rate_bucket(key_id: str, kind: str) -> str:
    return f"{PREFIX}:ratelimit:{key_id}:{kind}"


def conversation(owner: str, conversation_id: str) -> str:
    return f"{PREFIX}:conv:{owner}:{conversation_id}"


def conversation_index(owner: str) -> str:
    return f"{PREFIX}:convs:{owner}"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def job_events(job_id: str) -> str:
    return job_events_stream(job_id)


def job_process(job_id: str) -> str:
    return job_process_key(job_id)


def gateway(instance_id: str) -> str:
    return f"{PREFIX}:gateway:{instance_id}"
