"""Unit tests of the admin service's domain modules."""
