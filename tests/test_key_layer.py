"""KeyLayerTap: one layer's hidden states read by a hook equal ``output_hidden_states=True`` (tiny models)."""

from __future__ import annotations

import pytest
import torch
import transformers

from nest_integrations.key_layer import KeyLayerTap, decoder_layers

CONFIGS = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
    "gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel, {"n_embd": 32, "n_layer": 3, "n_head": 2}),
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM, {"head_dim": 16}),
    "gpt_neox": (transformers.GPTNeoXConfig, transformers.GPTNeoXForCausalLM, {}),
}


def _model(name: str):
    cfg_cls, model_cls, extra = CONFIGS[name]
    base = {"vocab_size": 128, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64}
    fields = {k: v for k, v in {**base, **extra}.items() if k in cfg_cls().to_dict() or k in extra}
    torch.manual_seed(0)
    return model_cls(cfg_cls(**fields)).eval()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_tap_equals_output_hidden_states_at_every_layer(name: str) -> None:
    model = _model(name)
    assert decoder_layers(model) is not None and len(decoder_layers(model)) == 3
    ids = torch.tensor([[5, 9, 17, 3, 77, 2]])
    with torch.inference_mode():
        ref = model(input_ids=ids, output_hidden_states=True).hidden_states
        for k in range(-4, 4):
            tap = KeyLayerTap(model, k)
            out, states = tap.forward(input_ids=ids)
            assert torch.equal(states, ref[k]), (name, k, tap.mode)
            assert torch.equal(out.logits, model(input_ids=ids).logits)
            # the interior layers are read by the hook, without keeping every hidden state
            assert tap.mode == ("hook" if k % 4 in (1, 2) else "all-states")
            assert out.hidden_states is None if tap.mode == "hook" else True
            tap.close()


def test_tap_rejects_a_layer_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        KeyLayerTap(_model("llama"), 4)


def test_tap_ignores_forward_passes_of_other_threads() -> None:
    import threading

    model = _model("llama")
    tap = KeyLayerTap(model, 1)
    assert tap.mode == "hook"
    ids = torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        other = threading.Thread(target=lambda: model(input_ids=torch.tensor([[4, 5]])))
        with tap._capturing() as box:
            other.start()
            other.join()
            assert box == []  # the other thread's forward was not captured
        _, states = tap.forward(input_ids=ids)
    assert states.shape == (1, 3, 32)
