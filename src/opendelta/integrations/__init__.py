"""Integrations with training engines (not imported by `import opendelta`; each imports its engine).

- `opendelta.integrations.trainer`: `OpenDeltaCallback` for the transformers `Trainer` (and its subclasses, such
  as TRL's `SFTTrainer`).
"""
