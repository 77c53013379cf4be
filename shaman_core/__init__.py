"""Shaman: the content-addressed file store of Flamenco 2.x."""
