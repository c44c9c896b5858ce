"""BMC Registry: the five gRPC services, the REST edge, their kit and the `bmc` command."""
