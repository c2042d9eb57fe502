"""ira.virtio"""
