"""Cluster operations: doctor, prereqs, deploy, status, teardown, up (see docs/operations.md).

Pure decisions over plain API objects; `cluster.KubeCluster` is the one thin part that talks to
a cluster, and `flows` strings them together for the CLI.
"""
