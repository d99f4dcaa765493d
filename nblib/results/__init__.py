"""Results: records of runs (``records``), the comparison that reads them (``comparison``), figures
(``plotting``) and the main job's runner (``report``). No model and no torch is imported here: the
comparison reads records only. Map of the library: ``nblib/README.md``."""
