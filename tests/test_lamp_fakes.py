"""Deterministic stand-ins shared by the LaMP tests: a hashing embedder, tiny LaMP files and
a rule-based 'LLM' that reads the personalised prompt."""

from __future__ import annotations

import hashlib
import re

import numpy as np

from vars_langgraph_eval.lamp.data import Question

L2_PREFIX = ("Which tag does this movie relate to among the following tags? Just answer with "
             "the tag name without further explanation. tags: [sci-fi, based on a book, comedy, "
             "action, twist ending, dystopia, dark comedy, classic, psychology, fantasy, romance, "
             "thought-provoking, social commentary, violence, true story] description: ")
WORDS = {"comedy": "funny laugh joke silly", "action": "explosion chase fight gun"}


class HashEmbedder:
    """Bag of hashed words, L2-normalised (the Embedder protocol)."""

    dim = 256

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        for w in re.findall(r"[a-z0-9]+", text.lower()):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def embed_documents(self, texts):
        return np.stack([self._vec(t) for t in texts]) if len(texts) else np.zeros((0, self.dim))

    def embed_query(self, text):
        return self._vec(text)


def lamp2_user(uid: str, fav: str, n_items: int = 12, minority_every: int = 4) -> Question:
    """A movie-tagging user whose profile mostly carries `fav`; the input is a `fav` movie."""
    other = "action" if fav == "comedy" else "comedy"
    profile = []
    for j in range(n_items):
        tag = other if j % minority_every == 0 else fav
        profile.append({"id": f"{uid}-{j}", "tag": tag, "date": f"2020-01-{j + 1:02d}",
                        "description": f"{WORDS[tag]} movie {uid} number {j}"})
    return Question(uid, L2_PREFIX + f"a {WORDS[fav].split()[0]} film", profile)


def tag_reader(prompt: str) -> str:
    """Answers with the majority tag among the profile items in the prompt, else 'comedy'."""
    tags = re.findall(r'is "([^"]+)" ', prompt)
    return max(set(tags), key=tags.count) if tags else "comedy"


def test_fakes_are_deterministic():
    e = HashEmbedder()
    assert np.allclose(e.embed_query("funny laugh"), e.embed_documents(["funny laugh"])[0])
    assert tag_reader('the tag for the movie: "x" is "action" . Which') == "action"
    assert tag_reader("no profile") == "comedy"
