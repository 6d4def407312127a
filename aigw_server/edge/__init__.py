"""The embedded REST edge: transcodes REST/JSON to the mesh's gRPC services from their google.api.http annotations."""
