"""The messages that cross a process boundary, defined once (pydantic, torch-free).

Every producer and consumer of a seam imports its message from here, so a field renamed on one
side fails the other side's tests instead of drifting. One module per seam:

- `sampling`: the sampling parameters, with the one set of defaults (docs/contracts.md);
- `generate`: a generate request to the inference service and the items of its stream (tokens,
  tool activity, finish, error);
- `errors`: error kinds that cross gRPC and HTTP as structured details;
- `events`: the trainer's progress events (versioned), read by the gateway and the web UI;
- `training`: the trainer's typed configuration (stages, presets), torch-free;
- `jobs`: job specs, validated against that configuration.
"""
