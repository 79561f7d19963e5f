"""Thin command-line front ends; each parses, calls the library, prints."""
