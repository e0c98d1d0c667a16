"""The isolated Python tool-execution service."""
