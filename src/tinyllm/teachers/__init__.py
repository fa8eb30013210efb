"""Local teacher backends that write rationales into the per-teacher caches.

- ``config``    ``TeacherConfig``: one ``teachers: {NAME: {...}}`` entry of params.yaml
- ``prompts``   the paper's teacher prompt (teacher forcing on/off), plain or chat
- ``icl``       in-context example selection (random, similar) from a rationale source
- ``backends``  ``BACKENDS``: transformers, llama_cpp, openai behind ``generate_batch``
- ``generate``  resumable, kill-safe generation of one teacher x benchmark x split
"""

from .config import ICLConfig, TeacherConfig, load_teacher, teacher_config

__all__ = ["ICLConfig", "TeacherConfig", "load_teacher", "teacher_config"]
