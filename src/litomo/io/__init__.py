"""Readers and writers. ``read_volume`` picks the reader from the file name."""
