"""A one-node Kubernetes look-alike in network namespaces that runs real etcd members (`python -m lab`)."""
