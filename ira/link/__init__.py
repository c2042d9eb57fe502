"""ira.link"""
