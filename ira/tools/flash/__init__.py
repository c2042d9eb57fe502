"""``ira flash``: put ira on a board through its serial console (see docs/ARCHITECTURE.md).

``session.flash(options)`` runs the steps; ``console`` talks to the board's shell,
``payload`` builds the zipapp, ``stub`` the receiver typed into the shell,
``plan`` the checks and the install plan, ``installer`` carries it out.
"""
