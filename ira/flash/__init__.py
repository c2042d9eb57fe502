"""The flash transfer (sans-I/O): ``sender`` on the host, ``receiver`` on the board.

The frames are ``ira.wire.flash``; the I/O around both ends is ``ira.tools.flash``.
"""
