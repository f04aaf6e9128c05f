"""The distributed trainer that TrainingJob pods run (``python -m trainwright_trainer``).

``trainwright_trainer.config`` and ``trainwright_trainer.exitcodes`` import no
torch: the operator uses them to render a job's configuration and to act on
its exit status.
"""

__version__ = "0.1.0"
