"""The load test's own Pulumi project (loadtest/Pulumi.yaml): its node pool, namespace, identity, user and
Locust templates beside a running platform, whose outputs it reads through a StackReference."""
