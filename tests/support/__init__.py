"""Test support shared by every test package: real servers on loopback, never mocks."""
