"""Standard gRPC health checking and server reflection, as grpcurl and Kubernetes probes use them."""

from __future__ import annotations

import queue
import threading

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tokenizer_svc.server import SERVICE_NAME, TokenizerServer

from chatforge.tokenizer_client import TokenizerClient
from chatforge.v1 import tokenizer_pb2 as pb
from chatforge.v1 import tokenizer_pb2_grpc as pb_grpc
from tests.tokenizer_svc.conftest import make_settings


def test_health_serving(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_service(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert {SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    pool = descriptor_pool.DescriptorPool(db)
    service = pool.FindServiceByName(SERVICE_NAME)
    methods = {m.name for m in service.methods}
    assert methods == {
        "Encode", "EncodeBatch", "Decode", "CountTokens", "RenderConversation", "DecodeStream", "Info", "Reload",
    }  # fmt: skip
    stream = service.methods_by_name["DecodeStream"]
    assert stream.client_streaming and stream.server_streaming
    assert pool.FindMessageTypeByName("chatforge.v1.RenderConversationRequest").fields_by_name[
        "with_loss_mask"
    ]


def test_graceful_shutdown_finishes_in_flight_stream(store_root, tiny_tokenizer):
    """Stopping with a grace period lets an open stream finish; health says NOT_SERVING meanwhile."""
    srv = TokenizerServer(make_settings(store_root))
    pending: queue.SimpleQueue = queue.SimpleQueue()
    with grpc.insecure_channel(srv.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)

        def requests():
            while (ids := pending.get()) is not None:
                yield pb.DecodeStreamRequest(ids=ids)

        responses = pb_grpc.TokenizerServiceStub(ch).DecodeStream(requests(), timeout=20)
        pending.put(tiny_tokenizer.encode("before "))
        assert next(responses).text == "before "
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=20)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        stopper = threading.Thread(target=srv.stop, args=(10,))
        stopper.start()
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        assert stopper.is_alive()  # waiting for the stream, well within its 10 s grace
        pending.put(tiny_tokenizer.encode("after"))
        pending.put(None)
        assert [(r.text, r.final) for r in responses] == [("after", False), ("", True)]
        stopper.join(10)
        assert not stopper.is_alive()
    with grpc.insecure_channel(srv.address) as ch, pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_drain_keeps_answering_while_not_serving(store_root):
    """During drain_s a load balancer sees NOT_SERVING while requests still succeed."""
    srv = TokenizerServer(make_settings(store_root, drain_s=2.0))
    with grpc.insecure_channel(srv.address) as ch, TokenizerClient(srv.address) as client:
        health = health_pb2_grpc.HealthStub(ch)
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=20)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        stopper = threading.Thread(target=srv.stop, args=(0,))
        stopper.start()
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status  # a new RPC, still taken
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert client.encode("draining") != []
        stopper.join(10)
