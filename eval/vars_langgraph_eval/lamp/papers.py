"""Published LaMP numbers (theirs, not ours), printed beside our results for reference.

All are FlanT5-XXL (11B, frozen, zero-shot reader) on the LaMP *time-based* split with k = 4
retrieved items: Persona-Plug Table 1 (Liu et al., arXiv 2409.11901; dev and test) and ROPG
Table 3 (Salemi et al., SIGIR 2024, arXiv 2404.05970; test, also LaMP-6 and RRF). Values are
transcribed from the papers; None where a paper reports none. Their "Contriever" is the
counterpart of our `dense` retriever (which uses the configured embedder instead).
"""

from __future__ import annotations

THEIR_MODEL = "FlanT5-XXL (11B), frozen, zero-shot; LaMP time split; k = 4"

# Our method name -> the column name in the papers.
OUR_TO_THEIRS = {
    "none": "No personalization", "bm25": "BM25", "recency": "Recency", "dense": "Contriever",
    "ropg-rl": "ROPG-RL", "ropg-kd": "ROPG-KD", "rspg-pre": "RSPG-Pre", "rspg-post": "RSPG-Post",
    "pplug": "PPlug",
}

PPLUG_SYSTEMS = [
    'No personalization', 'FTP (per-user LoRA)', 'BM25', 'Recency', 'Contriever', 'ROPG-RL',
    'ROPG-KD', 'RSPG-Pre', 'RSPG-Post', 'PPlug',
]
PPLUG_DEV = {
    ("LaMP_1", "accuracy"): [0.498, None, 0.629, 0.639, 0.641, 0.682, 0.676, 0.672, 0.67, 0.68],
    ("LaMP_2", "accuracy"): [0.326, None, 0.345, 0.361, 0.362, 0.365, 0.365, 0.391, 0.416, 0.565],
    ("LaMP_2", "f1"): [0.255, None, 0.282, 0.291, 0.282, 0.292, 0.291, 0.312, 0.337, 0.501],
    ("LaMP_3", "MAE"): [0.335, None, 0.293, 0.305, 0.297, 0.273, 0.274, 0.266, 0.246, 0.231],
    ("LaMP_3", "RMSE"): [0.639, None, 0.585, 0.596, 0.592, 0.561, 0.566, 0.56, 0.539, 0.534],
    ("LaMP_4", "rouge-1"): [0.173, None, 0.192, 0.194, 0.19, 0.19, 0.193, 0.195, 0.207, 0.216],
    ("LaMP_4", "rouge-L"): [0.157, None, 0.175, 0.177, 0.174, 0.174, 0.176, 0.179, 0.188, 0.197],
    ("LaMP_5", "rouge-1"): [0.472, None, 0.467, 0.469, 0.471, 0.473, 0.472, 0.479, 0.48, 0.487],
    ("LaMP_5", "rouge-L"): [0.419, None, 0.419, 0.422, 0.421, 0.425, 0.423, 0.429, 0.429, 0.436],
    ("LaMP_7", "rouge-1"): [0.454, None, 0.451, 0.452, 0.44, 0.458, 0.451, 0.46, 0.468, 0.534],
    ("LaMP_7", "rouge-L"): [0.401, None, 0.401, 0.402, 0.391, 0.407, 0.402, 0.409, 0.416, 0.484],
}
PPLUG_TEST = {
    ("LaMP_1", "accuracy"): [0.502, 0.506, 0.626, 0.622, 0.636, 0.655, 0.668, 0.663, 0.672, 0.7],
    ("LaMP_2", "accuracy"): [0.359, 0.36, 0.387, 0.377, 0.396, 0.391, 0.396, 0.405, 0.43, 0.559],
    ("LaMP_2", "f1"): [0.276, 0.278, 0.306, 0.295, 0.304, 0.3, 0.306, 0.314, 0.339, 0.495],
    ("LaMP_3", "MAE"): [0.308, 0.301, 0.298, 0.296, 0.299, 0.286, 0.29, 0.282, 0.264, 0.242],
    ("LaMP_3", "RMSE"): [0.611, 0.6, 0.611, 0.605, 0.616, 0.591, 0.604, 0.585, 0.568, 0.557],
    ("LaMP_4", "rouge-1"): [0.176, 0.178, 0.186, 0.189, 0.183, 0.191, 0.187, 0.19, 0.203, 0.211],
    ("LaMP_4", "rouge-L"): [0.16, 0.163, 0.171, 0.173, 0.169, 0.177, 0.172, 0.176, 0.186, 0.193],
    ("LaMP_5", "rouge-1"): [0.478, 0.478, 0.477, 0.475, 0.483, 0.475, 0.477, 0.483, 0.48, 0.487],
    ("LaMP_5", "rouge-L"): [0.428, 0.429, 0.427, 0.426, 0.433, 0.427, 0.428, 0.431, 0.429, 0.439],
    ("LaMP_7", "rouge-1"): [0.449, 0.449, 0.446, 0.444, 0.44, 0.448, 0.441, 0.45, 0.461, 0.537],
    ("LaMP_7", "rouge-L"): [0.396, 0.397, 0.394, 0.393, 0.39, 0.397, 0.391, 0.4, 0.409, 0.484],
}
ROPG_SYSTEMS = [
    'No personalization', 'BM25', 'Recency', 'Contriever', 'RRF', 'ROPG-RL', 'ROPG-KD',
    'RSPG-Pre', 'RSPG-Post',
]
ROPG_TEST = {
    ("LaMP_1", "accuracy"): [0.502, 0.626, 0.622, 0.636, 0.57, 0.655, 0.668, 0.663, 0.672],
    ("LaMP_2", "accuracy"): [0.359, 0.387, 0.377, 0.396, 0.375, 0.391, 0.396, 0.405, 0.43],
    ("LaMP_2", "f1"): [0.276, 0.306, 0.295, 0.304, 0.299, 0.3, 0.306, 0.314, 0.339],
    ("LaMP_3", "MAE"): [0.308, 0.298, 0.296, 0.299, 0.314, 0.286, 0.29, 0.282, 0.264],
    ("LaMP_3", "RMSE"): [0.611, 0.611, 0.605, 0.616, 0.614, 0.591, 0.604, 0.585, 0.568],
    ("LaMP_4", "rouge-1"): [0.176, 0.186, 0.189, 0.183, 0.19, 0.191, 0.187, 0.19, 0.203],
    ("LaMP_4", "rouge-L"): [0.16, 0.171, 0.173, 0.169, 0.176, 0.177, 0.172, 0.176, 0.186],
    ("LaMP_5", "rouge-1"): [0.478, 0.477, 0.475, 0.483, 0.478, 0.475, 0.477, 0.483, 0.48],
    ("LaMP_5", "rouge-L"): [0.428, 0.427, 0.426, 0.433, 0.428, 0.427, 0.428, 0.431, 0.429],
    ("LaMP_6", "rouge-1"): [0.335, 0.412, 0.403, 0.401, 0.394, 0.394, 0.415, 0.426, 0.433],
    ("LaMP_6", "rouge-L"): [0.319, 0.398, 0.389, 0.386, 0.381, 0.381, 0.4, 0.411, 0.418],
    ("LaMP_7", "rouge-1"): [0.449, 0.446, 0.444, 0.44, 0.446, 0.448, 0.441, 0.45, 0.461],
    ("LaMP_7", "rouge-L"): [0.396, 0.394, 0.393, 0.39, 0.395, 0.397, 0.391, 0.4, 0.409],
}

TABLES = {
    "Persona-Plug Table 1, dev": (PPLUG_SYSTEMS, PPLUG_DEV),
    "Persona-Plug Table 1, test": (PPLUG_SYSTEMS, PPLUG_TEST),
    "ROPG Table 3, test": (ROPG_SYSTEMS, ROPG_TEST),
}


def published(task: str, metrics: list[str]) -> dict[str, dict[str, dict[str, float | None]]]:
    """{table: {system: {metric: value}}} of the papers' numbers for a task (None: absent)."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for title, (systems, table) in TABLES.items():
        rows = {s: {m: (table.get((task, m)) or [None] * len(systems))[i] for m in metrics}
                for i, s in enumerate(systems)}
        rows = {s: r for s, r in rows.items() if any(v is not None for v in r.values())}
        if rows:
            out[title] = rows
    return out
