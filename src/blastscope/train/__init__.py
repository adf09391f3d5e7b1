"""Training: datasets, label noise, robust losses, loops, evaluation reports and the trainers.

The trainers run as ``blastscope train blast|mutation|...``; each lives in its own module with
``add_arguments(parser)`` and ``run(args) -> int``. Import the submodules directly (this package
imports nothing heavy on its own).
"""
