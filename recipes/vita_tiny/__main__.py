"""`python -m recipes.vita_tiny`: build, train, evaluate and export vita-tiny (see `run.py`)."""

from recipes.vita_tiny.run import main

main()
