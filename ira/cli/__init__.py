"""The ``ira`` command.  Only this package configures logging handlers."""
