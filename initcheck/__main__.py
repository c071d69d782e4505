"""python -m initcheck"""

from .cli import main

main(prog_name="initcheck")
