"""Tests of the taskflow command line: parsing, commands against real workers, process groups."""
