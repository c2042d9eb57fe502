"""ira.busmodel"""
