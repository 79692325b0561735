"""PrefEval's four checks on an answer (acknowledges, hallucinates, violates, helpful) and its
preference-following accuracy, scored by any OpenAI-compatible judge model.

The checks, their order and the accuracy rule follow PrefEval's harness
(github.com/amazon-science/PrefEval, error_type/*.txt and
generation_task/get_preference_following_accuracy_generation_task.py; Zhao et al., ICLR 2025).
That repository is CC BY-NC 4.0, so its prompt files are not copied here: the prompts below are
shorter restatements of the same criteria with the same XML answer format. To score with the
original wording, pass `--judge-prompts DIR` (a PrefEval checkout's `error_type/`): the files
check_acknowledge.txt, check_hallucination.txt, check_violation.txt, check_helpful.txt are then
read at run time.

Accuracy (as in PrefEval): an answer follows the preference unless it is unhelpful or violates
the preference (inconsistent, hallucinated-preference violation, preference-unaware violation).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ACKNOWLEDGE = """You will analyze an assistant's answer to a user's question and decide whether \
the answer acknowledges any user preference, explicitly ("Since you mentioned you prefer ...", \
"Given your preference for ...") or implicitly (it assumes a preference, e.g. "Based on your \
preference, I will recommend non-EV cars"). The content of the preference does not matter, only \
its presence. A vague "Based on our previous conversation" without stating a preference is No.

The user's question is: {question}
Assistant response: {end_generation}

Answer in this exact XML format without any other text:
<preference>[quote the sentence that states what the preference is; blank if none]</preference>
<answer>[Yes/No]</answer>"""

HALLUCINATE = """You will decide whether an assistant's restatement of the user's preference is \
a different preference. Answer "Yes" if the restatement differs in meaning or intent, \
contradicts the original, or is unrelated to it. Answer "No" if it matches, is a faithful \
paraphrase, or is empty.

Original user preference: "{preference}"
Assistant's restatement: "{assistant_restatement}"

Answer in this exact XML format without any other text:
<explanation>[1 short sentence]</explanation>
<answer>[Yes/No]</answer>"""

VIOLATE = """You will decide whether an assistant's answer violates the user's stated preference. \
Answer "Yes" if the answer contains recommendations that directly contradict the preference \
without acknowledging it or explaining why. Answer "No" if it respects the preference, or \
includes possibly conflicting options only after acknowledging the preference and saying how to \
avoid the conflict, or does not acknowledge the preference but recommends nothing against it.

User's preference: {preference}
User query: {question}
Assistant response: {end_generation}

Answer in this exact XML format:
<explanation>[1 very short sentence]</explanation>
<answer>[Yes/No]</answer>"""

HELPFUL = """You will decide whether an assistant gives a substantive answer to the user's query. \
Answer "Yes" if it gives specific, relevant recommendations or advice without apologising or \
claiming it cannot answer. Answer "No" if it apologises or claims it lacks memory of the user's \
preferences, only asks for more information, does not address the query, or first says it \
cannot follow the user's preference.

User query: {question}
Assistant response: {end_generation}

Answer in this exact XML format:
<explanation>[1 very short sentence]</explanation>
<answer>[Yes/No]</answer>"""

PROMPTS = {"acknowledge": ACKNOWLEDGE, "hallucinate": HALLUCINATE, "violate": VIOLATE,
           "helpful": HELPFUL}
PREFEVAL_FILES = {"acknowledge": "check_acknowledge.txt", "hallucinate": "check_hallucination.txt",
                  "violate": "check_violation.txt", "helpful": "check_helpful.txt"}


def load_prompts(directory: str | Path | None) -> dict[str, str]:
    """The built-in prompts, or PrefEval's original files from `directory`."""
    if directory is None:
        return dict(PROMPTS)
    d = Path(directory)
    missing = [f for f in PREFEVAL_FILES.values() if not (d / f).exists()]
    if missing:
        raise FileNotFoundError(f"--judge-prompts {d}: missing {', '.join(missing)}")
    return {k: (d / f).read_text() for k, f in PREFEVAL_FILES.items()}


def xml_tag(text: str, tag: str) -> str:
    m = re.search(rf"<{tag}>(.*?)</{tag}>", text or "", re.S | re.I)
    if m:
        return m.group(1).strip()
    m = re.search(rf"<{tag}>(.*)$", text or "", re.S | re.I)  # unterminated tag
    return m.group(1).strip() if m else ""


@dataclass
class Verdict:
    acknowledges: bool
    hallucinates: bool
    violates: bool
    helpful: bool
    restatement: str = ""

    @property
    def follows(self) -> bool:
        """PrefEval's preference-following accuracy for one answer."""
        inconsistent = self.acknowledges and not self.hallucinates and self.violates and self.helpful
        halluc_violation = self.acknowledges and self.hallucinates and self.violates and self.helpful
        unaware_violation = not self.acknowledges and self.violates and self.helpful
        return not (inconsistent or halluc_violation or unaware_violation or not self.helpful)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "follows": self.follows}


def _yes(text: str) -> bool:
    return "yes" in xml_tag(text, "answer").lower()


def _no(text: str) -> bool:
    return "no" in xml_tag(text, "answer").lower()


def judge_answer(complete: Callable[[str], str], preference: str, question: str, answer: str,
                 prompts: dict[str, str] | None = None) -> Verdict:
    """Run the four checks with `complete(prompt) -> judge text` (temperature 0 upstream)."""
    p = prompts or PROMPTS
    ack_raw = complete(p["acknowledge"].format(question=question, end_generation=answer))
    ack = _yes(ack_raw)
    restated = xml_tag(ack_raw, "preference")
    halluc = False
    if ack:
        halluc = _yes(complete(p["hallucinate"].format(preference=preference,
                                                       assistant_restatement=restated)))
    violates = _yes(complete(p["violate"].format(preference=preference, question=question,
                                                 end_generation=answer)))
    helpful = not _no(complete(p["helpful"].format(question=question, end_generation=answer)))
    return Verdict(ack, halluc, violates, helpful, restated)


def openai_judge(base_url: str, model: str, api_key: str = "not-needed",
                 max_tokens: int = 100, timeout: float = 300.0) -> Callable[[str], str]:
    """`prompt -> text` over an OpenAI-compatible server, greedy (PrefEval: temperature 0,
    100 tokens)."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=2)

    def complete(prompt: str) -> str:
        resp = client.chat.completions.create(
            model=model, temperature=0.0, max_tokens=max_tokens,
            messages=[{"role": "user", "content": prompt}])
        return resp.choices[0].message.content or ""

    return complete
