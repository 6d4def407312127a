"""Security tests of the whole mesh, driven through the REST edge and the services' gRPC ports."""
