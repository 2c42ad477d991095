"""Test doubles for quorum and for your own workflows: the fake provider and the emulator."""
