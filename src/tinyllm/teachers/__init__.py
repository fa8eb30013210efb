"""Local teachers that write rationales into the per-teacher caches (stage ``generate_rationales``).

A teacher is one ``teachers: {NAME: {...}}`` entry of params.yaml; dvc.yaml's matrix makes one
stage per teacher and benchmark from it. Where what lives:

- ``config``    ``TeacherConfig``: one entry of params.yaml, type- and range-checked
- ``prompts``   the paper's teacher prompt (teacher forcing on/off), plain or chat
- ``icl``       in-context examples: random (the paper's) or similar (TF-IDF), from a released cache
- ``backends``  ``BACKENDS``: transformers, llama_cpp, openai behind ``generate_batch``
- ``generate``  resumable, kill-safe generation of one teacher x benchmark x split (the entry point)

The cache format itself (records, flags, status) lives in ``tinyllm.rationales``.
"""

from .config import ICLConfig, TeacherConfig, load_teacher, teacher_config

__all__ = ["ICLConfig", "TeacherConfig", "load_teacher", "teacher_config"]
