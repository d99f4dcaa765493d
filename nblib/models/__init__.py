"""The models a learner reads, one file per family: ``elmo``, ``bert``, ``electra``, ``gpt``, the
Transformer layers BERT and GPT share (``layers``), the baselines (``static``, ``baselines``) and the
Hugging Face weight-name convention (``hf_io``). Map of the library: ``nblib/README.md``."""
