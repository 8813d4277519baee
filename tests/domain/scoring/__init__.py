"""Unit tests of the pure scoring domain."""
