"""What the routes share: the parts the app factory builds once, reached through one dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from chatforge.artifacts import ArtifactStore
from gateway.admission import Admission
from gateway.auth import KeyStore
from gateway.codec import TextCodec
from gateway.conversations import ConversationStore
from gateway.inference import InferenceClient
from gateway.instance import GatewayInstance
from gateway.jobs.service import JobService
from gateway.metrics import GatewayMetrics
from gateway.ratelimit import RateLimiter
from gateway.settings import Settings


@dataclass
class GatewayState:
    settings: Settings
    redis: Any
    instance: GatewayInstance
    store: ArtifactStore
    keys: KeyStore
    limiter: RateLimiter
    admission: Admission
    codec: TextCodec
    inference: InferenceClient
    jobs: JobService
    conversations: ConversationStore
    metrics: GatewayMetrics


def get_state(request: Request) -> GatewayState:
    return request.app.state.gateway


State = Annotated[GatewayState, Depends(get_state)]
