"""Generated gRPC stubs for the `chatforge.v1` protobuf package (from `proto/chatforge/v1/`).

Everything here except this file is written by `make proto`; `make proto-check` fails when it is
stale. Import the typed client (`chatforge.tokenizer_client`) rather than these modules directly.
"""
