"""Generate a tiny random-weight Llama and a byte-level BPE tokenizer, offline.

vLLM loads it like any Hugging Face model directory. head_dim must be 64 (hidden 128, 2
heads): the CPU attention backend rejects smaller heads. The tokenizer is trained on a few
kilobytes of text so that ordinary English prompts become a realistic number of tokens.
"""
from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Platform engineers deploy large language models "
    "on Kubernetes with gateways, endpoint pickers and model servers. Prefix caching reuses the "
    "key value cache of a shared prompt prefix so that the time to first token drops. "
    "Benchmarks measure time to first token, inter token latency and throughput. "
) * 40


def generate(directory: Path, *, max_positions: int = 4096, vocab_size: int = 2048) -> Path:
    """Write config, weights and tokenizer into `directory` (idempotent) and return it."""
    directory = Path(directory)
    if (directory / "config.json").exists() and (directory / "tokenizer.json").exists():
        return directory
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_CORPUS], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = max_positions
    fast.save_pretrained(directory)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=max_positions,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=True,
        torch_dtype="float32",
    )
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    (directory / "lightrail-tiny-model.json").write_text(json.dumps({"generated_by": "lightrail.testing.tinymodel"}))
    return directory


if __name__ == "__main__":
    import sys

    print(generate(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-model")))
