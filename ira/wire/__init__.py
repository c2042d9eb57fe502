"""ira.wire"""
