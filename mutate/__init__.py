"""Mutation testing of Parley's security- and delivery-critical modules (``./run mutate``)."""
