"""Messaging: the Broker interface and one adapter per backend."""
