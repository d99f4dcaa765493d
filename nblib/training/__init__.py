"""Training: the one classifier (``classifier``), fine-tuning a run (``finetuning``), pretraining on
the character budget (``pretraining``), run folders that load back (``saved_runs``), the pool of
jobs and its cache (``pool``, ``runcache``), progress (``progress``). Map: ``nblib/README.md``."""
