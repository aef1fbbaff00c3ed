"""Tests of the alerts package."""
