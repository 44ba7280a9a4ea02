"""Blob storage: the BlobStore interface and one adapter per backend."""
