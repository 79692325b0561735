"""`lamp_main` end to end on tiny official-format files the tests write themselves."""

import json
import threading
import time
from dataclasses import asdict

import pytest

from tests.test_lamp_fakes import HashEmbedder, lamp2_user, tag_reader
from vars_langgraph_eval.lamp.data import load_outputs
from vars_langgraph_eval.lamp.harness import lamp_main
from vars_langgraph_eval.lamp.metrics import evaluate_task


def write_task(tmp_path, name, users):
    qs = [asdict(lamp2_user(f"{name}{i}", fav)) for i, fav in enumerate(users)]
    golds = [{"id": q["id"], "output": fav} for q, fav in zip(qs, users, strict=True)]
    q, o = tmp_path / f"{name}_questions.json", tmp_path / f"{name}_outputs.json"
    q.write_text(json.dumps(qs))
    o.write_text(json.dumps({"task": "LaMP_2", "golds": golds}))
    return str(q), str(o)


@pytest.fixture
def files(tmp_path):
    return (write_task(tmp_path, "dev", ["comedy", "action"] * 4),
            write_task(tmp_path, "train", ["action", "comedy", "comedy"] * 4))


def run(tmp_path, files, *extra, generator=tag_reader):
    (q, o), (tq, to) = files
    argv = ["--task", "LaMP-2", "--questions", q, "--outputs", o, "--out", str(tmp_path / "out"),
            "--no-progress", "--train-questions", tq, "--train-outputs", to, *extra]
    return lamp_main(argv, generator=generator, embedder=HashEmbedder())


def test_all_methods_end_to_end(tmp_path, files, capsys):
    methods = "none,bm25,recency,dense,vars,ropg-rl,ropg-kd,rspg-pre,rspg-post"
    assert run(tmp_path, files, "--retriever", methods, "--epochs", "5") == 0
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    _, golds = load_outputs(files[0][1])
    for m in methods.split(","):
        task, preds = load_outputs(out / f"LaMP_2_{m}_predictions.json")  # official format
        assert task == "LaMP_2" and set(preds) == set(golds)
        # the stored metrics are the official ones of the written predictions
        assert results["methods"][m]["metrics"] == evaluate_task("LaMP_2", golds, preds)
    # No profile: the reader always says 'comedy' -> accuracy 1/2; macro-F1 (2/3) / 15.
    assert results["methods"]["none"]["metrics"]["accuracy"] == pytest.approx(0.5)
    assert results["methods"]["none"]["metrics"]["f1"] == pytest.approx(2 / 3 / 15)
    # Every retriever surfaces the user's majority tag; the reader copies it.
    for m in ("bm25", "recency", "dense", "vars", "ropg-rl", "ropg-kd", "rspg-post"):
        assert results["methods"][m]["metrics"]["accuracy"] == 1.0, m
    trace = [json.loads(x) for x in (out / "LaMP_2_bm25_trace.jsonl").read_text().splitlines()]
    assert len(trace[0]["picks"]) == 4 and trace[0]["prompt"].startswith("the tag for the movie")
    report = (out / "results.md").read_text()
    assert "theirs" in report and "FlanT5-XXL" in report and "| RSPG-Post | 0.416 | 0.337" in report
    assert (out / "models" / "LaMP_2_ropg-kd.pt").exists()
    assert "| bm25 | 1.000 |" in capsys.readouterr().out


def test_trained_models_reload_and_limit(tmp_path, files):
    assert run(tmp_path, files, "--retriever", "ropg-kd,rspg-pre", "--epochs", "3") == 0
    (q, o), _ = files
    argv = ["--task", "LaMP_2", "--questions", q, "--outputs", o, "--out", str(tmp_path / "re"),
            "--no-progress", "--retriever", "ropg-kd,rspg-pre", "--models",
            str(tmp_path / "out" / "models"), "--limit", "3", "--k", "2"]
    assert lamp_main(argv, generator=tag_reader, embedder=HashEmbedder()) == 0
    _, preds = load_outputs(tmp_path / "re" / "LaMP_2_ropg-kd_predictions.json")
    assert len(preds) == 3
    trace = (tmp_path / "re" / "LaMP_2_rspg-pre_trace.jsonl").read_text().splitlines()
    picks = json.loads(trace[0])["picks"]
    assert picks[0] in ("none", "bm25", "recency", "dense") and len(picks) <= 3


def test_generation_is_batched_and_each_prompt_generated_once(tmp_path, files):
    seen, lock, state = [], threading.Lock(), {"now": 0, "max": 0}

    def gen(prompt):
        with lock:
            seen.append(prompt)
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return tag_reader(prompt)

    (q, o), _ = files
    argv = ["--task", "LaMP_2", "--questions", q, "--outputs", o, "--out", str(tmp_path / "o"),
            "--no-progress", "--retriever", "none,none,bm25", "--workers", "3"]
    assert lamp_main(argv, generator=gen, embedder=HashEmbedder()) == 0
    # 'none' prompts are the bare inputs (2 distinct here) + 8 bm25 prompts, each sent once
    assert len(seen) == len(set(seen)) == 10
    assert state["max"] == 3  # three requests in flight at once


@pytest.mark.parametrize("argv,message", [
    (["--retriever", "magic"], "unknown method"),
    (["--retriever", "ropg-rl"], "must be trained"),
    (["--task", "LaMP_3"], "holds LaMP_2"),
])
def test_bad_input_returns_2_with_a_message(tmp_path, files, capsys, argv, message):
    (q, o), _ = files
    base = ["--task", "LaMP_2", "--questions", q, "--outputs", o, "--out", str(tmp_path / "x"),
            "--no-progress"]
    assert lamp_main(base + argv, generator=tag_reader, embedder=HashEmbedder()) == 2
    assert message in capsys.readouterr().err


def test_predictions_only_without_golds(tmp_path, files):
    (q, _), _ = files
    argv = ["--task", "LaMP_2", "--questions", q, "--out", str(tmp_path / "p"), "--no-progress"]
    assert lamp_main(argv, generator=tag_reader, embedder=HashEmbedder()) == 0
    results = json.loads((tmp_path / "p" / "results.json").read_text())
    assert results["methods"]["bm25"]["metrics"] is None
    assert "nothing was scored" in (tmp_path / "p" / "results.md").read_text()


def test_pplug_method_trains_saves_and_reloads(tmp_path, files):
    from tests.test_persona_plug import tiny_parts

    tok, bert, llm = tiny_parts(HashEmbedder.dim)
    for name, model in (("llm", llm), ("enc", bert)):
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    common = ["--retriever", "pplug", "--pplug-llm", str(tmp_path / "llm"), "--pplug-encoder",
              str(tmp_path / "enc"), "--max-tokens", "2", "--device", "cpu"]
    assert run(tmp_path, files, *common, "--pplug-batch-size", "4", "--limit", "2",
               "--train-limit", "4") == 0
    saved = tmp_path / "out" / "models" / "LaMP_2_pplug"
    assert (saved / "pplug.pt").exists()
    _, preds = load_outputs(tmp_path / "out" / "LaMP_2_pplug_predictions.json")
    assert len(preds) == 2
    (q, o), _ = files
    argv = ["--task", "LaMP_2", "--questions", q, "--outputs", o, "--out", str(tmp_path / "r"),
            "--no-progress", "--models", str(tmp_path / "out" / "models"), "--limit", "2", *common]
    assert lamp_main(argv, generator=tag_reader, embedder=HashEmbedder()) == 0
    _, again = load_outputs(tmp_path / "r" / "LaMP_2_pplug_predictions.json")
    assert again == preds  # the reloaded plug answers as the trained one did


@pytest.mark.llm
def test_real_llm_through_the_local_server(tmp_path, llm_base_url):
    (q, o), _ = (write_task(tmp_path, "dev", ["comedy", "action", "comedy"]), None)
    argv = ["--task", "LaMP_2", "--questions", q, "--outputs", o, "--out", str(tmp_path / "llm"),
            "--no-progress", "--retriever", "none,bm25", "--base-url", llm_base_url,
            "--max-tokens", "8", "--workers", "2"]
    assert lamp_main(argv, embedder=HashEmbedder()) == 0
    results = json.loads((tmp_path / "llm" / "results.json").read_text())
    for m in ("none", "bm25"):
        _, preds = load_outputs(tmp_path / "llm" / f"LaMP_2_{m}_predictions.json")
        assert len(preds) == 3 and all(isinstance(v, str) for v in preds.values())
        assert 0.0 <= results["methods"][m]["metrics"]["accuracy"] <= 1.0
    assert llm_base_url in results["model"]
