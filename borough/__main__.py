"""``python -m borough`` runs the command line (the same as the ``borough`` script)."""

from borough.cli import main

main()
