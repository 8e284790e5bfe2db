"""Readings: what NVML, torch's allocator and the OS say about memory, as plain dataclasses."""
