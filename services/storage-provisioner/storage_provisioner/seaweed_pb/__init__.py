"""Python stubs of SeaweedFS's ``iam.proto``, generated once by grpcio-tools (README.md)."""
