"""The paper's Table 1 (v1): teachers' and students' accuracy, shown beside our rows."""

# Paper v1, Table 1 (accuracy %, six benchmarks + average); docs: ../shared/docs/tinyllm-paper.md
PAPER_TEACHERS = {
    "flan_t5_xl": ("Teacher FLAN-T5 xlarge (3B)", [69.20, 68.24, 58.43, 53.73, 71.50, 65.85, 64.49]),
    "llama2_7b": ("Teacher LLaMA 2 (7B)", [58.60, 45.90, 78.80, 47.65, 54.50, 73.75, 59.87]),
}
PAPER_STUDENTS = {"google/flan-t5-small": "80M", "google/flan-t5-base": "250M", "google/flan-t5-large": "780M"}
PAPER = {
    "80M": {
        "inference": [16.60, 19.31, 20.78, 13.33, 38.00, 47.97, 26.00],
        "lora": [37.80, 27.12, 39.93, 39.80, 53.75, 78.05, 46.08],
        "full_ft": [41.60, 27.47, 42.33, 42.75, 56.25, 78.86, 48.21],
        "tinyllm": [47.60, 31.93, 52.77, 49.22, 62.00, 82.11, 54.27],
    },
    "250M": {
        "inference": [31.00, 23.00, 30.47, 30.78, 48.00, 57.72, 36.83],
        "lora": [51.40, 37.25, 47.66, 53.14, 62.00, 82.93, 55.73],
        "full_ft": [56.60, 38.88, 47.55, 52.55, 64.75, 89.43, 58.29],
        "tinyllm": [64.20, 47.98, 60.17, 60.78, 66.25, 90.24, 64.94],
    },
    "780M": {
        "inference": [50.40, 51.07, 51.90, 39.80, 64.25, 63.41, 53.47],
        "lora": [64.00, 57.77, 57.02, 68.63, 70.25, 86.18, 67.31],
        "full_ft": [71.20, 62.92, 58.43, 68.82, 70.25, 90.24, 70.31],
        "tinyllm": [74.40, 64.29, 67.90, 70.98, 73.00, 92.68, 73.88],
    },
}
PAPER_LABEL = {
    "inference": "inference (no training)",
    "lora": "LoRA",
    "full_ft": "full fine-tuning",
    "tinyllm": "TinyLLM",
}
RELEASE_NOTE = (
    "The released teachers' own accuracy cannot be computed from the release: it holds "
    "their rationales, written *given the gold answer*, not their answers. The paper's "
    "teacher numbers are shown for reference."
)
