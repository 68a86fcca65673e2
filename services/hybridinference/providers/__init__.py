"""Provider workers: host endpoints of one provider kind and stream generations over gRPC."""
