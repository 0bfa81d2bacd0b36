from lookalike.cli import run

run()
