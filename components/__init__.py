"""The etcd peer SAN demonstration: pure decisions plus the Pulumi component."""
