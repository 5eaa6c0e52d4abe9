"""Tier 2: the module's own self-test (``SCDLSegmentTest.runTest``, as Reload & Test runs it) under pytest."""

import SCDLSegment


def test_module_self_test_runs_unchanged(slicer_app):
    SCDLSegment.SCDLSegmentTest().runTest()
