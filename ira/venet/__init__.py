"""ira.venet"""
