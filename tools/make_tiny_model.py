"""Build the tiny, deterministic GPT-2 chat model that offline runs and tests serve with `transformers serve`."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

# What the served model promises (tests rely on it): chat via a ChatML template; output is
# printable ASCII; it never emits <|im_end|>/specials, so every request runs to max_tokens
# (finish_reason "length") unless a stop string hits; temperature 0 is greedy and repeatable;
# prompt + max_tokens must stay within N_POSITIONS (transformers serve answers 500 beyond it).
# Bump RECIPE_VERSION whenever the output would change, so old directories get rebuilt.
# The shape (head dim n_embd / n_head = 64) is one that vLLM's CPU attention kernels accept too
# (they refuse small head dims such as 8), so both transformers serve and vLLM run this model.
RECIPE = "aigw-tiny-gpt2"
RECIPE_VERSION = 2
MARKER = "aigw_tiny_model.json"
SEED = 1234
VOCAB_SIZE = 512
N_POSITIONS = 8192
N_EMBD = 128
N_LAYER = 2
N_HEAD = 2

BOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [BOS, IM_START, IM_END, PAD]

# ChatML; content may be a string or a list of OpenAI content parts (only text parts are rendered).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% elif message['content'] %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

REQUIRED_FILES = (
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)

CORPUS = """\
The gateway accepts chat and OCR requests from clients and sends them to model servers.
Every request is authenticated, rate limited, queued by priority and persisted before it runs.
A queued job is leased to a worker, which picks a backend, streams tokens and reports the result.
If a worker dies, the lease expires and the job is queued again, at most three attempts in total.
Results stay retrievable by request id for fifteen days, whether the client waited or came back later.
Operators start, stop, switch and reconfigure models through the admin interface.
The small local model writes short sentences about queues, tokens, models and servers.
Hello! How can I help you today? I am a tiny model, so my answers are not very wise.
What is a token? A token is a small piece of text, such as a word or part of a word.
Why is the sky blue? Light from the sun is scattered by the air, and blue light scatters most.
One, two, three, four, five, six, seven, eight, nine, ten.
Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday are the days of the week.
The quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun.
Please write a short poem about the sea. The sea is wide, the sea is deep, the waves go by while sailors sleep.
Numbers like 0 1 2 3 4 5 6 7 8 9 and signs like + - * / = ( ) [ ] { } < > , . ; : ! ? appear in text.
"""


def _recipe() -> dict[str, object]:
    """Return the recipe description stored in the marker file."""
    return {
        "recipe": RECIPE,
        "version": RECIPE_VERSION,
        "seed": SEED,
        "n_layer": N_LAYER,
        "n_embd": N_EMBD,
        "n_head": N_HEAD,
        "n_positions": N_POSITIONS,
    }


def is_complete(out_dir: Path) -> bool:
    """Return True when out_dir already holds a complete model built by this recipe version."""
    marker = out_dir / MARKER
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if data != _recipe():
        return False
    return all((out_dir / name).is_file() for name in REQUIRED_FILES)


def _build(tmp: Path) -> None:
    """Build the tokenizer and model and save them into the empty directory tmp."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    # Tokenizer: byte-level BPE trained on the embedded corpus (deterministic for a fixed corpus).
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=raw,
        bos_token=BOS,
        eos_token=IM_END,
        unk_token=None,
        pad_token=PAD,
        model_max_length=N_POSITIONS,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    vocab = len(tokenizer)
    bos_id = tokenizer.convert_tokens_to_ids(BOS)
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    pad_id = tokenizer.convert_tokens_to_ids(PAD)
    assert isinstance(bos_id, int)
    assert isinstance(eos_id, int)
    assert isinstance(pad_id, int)

    # Tokens the model must never emit: specials, and byte tokens that are not printable ASCII
    # (so every output is clean ASCII text and a request always runs to max_tokens).
    banned: list[int] = []
    for token_id in range(vocab):
        text = tokenizer.decode([token_id], skip_special_tokens=False)
        special = token_id in (bos_id, eos_id, pad_id) or tokenizer.convert_ids_to_tokens(token_id) in SPECIAL_TOKENS
        printable = bool(text) and all(ch == "\n" or " " <= ch <= "~" for ch in text)
        if special or not printable:
            banned.append(token_id)

    config = GPT2Config(
        vocab_size=vocab,
        n_positions=N_POSITIONS,
        n_embd=N_EMBD,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        # Push the banned tokens' logits far down: feature 0 of the final layer norm is a
        # constant 8 (weight 0, bias 8) and their output rows weigh it by -4 (logit about -32);
        # every other row ignores feature 0, so the rest of the distribution is unchanged.
        model.transformer.ln_f.weight[0] = 0.0
        model.transformer.ln_f.bias[0] = 8.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[banned, 0] = -4.0
        # Sharper logits than the default init, so greedy and sampled text differ visibly.
        model.lm_head.weight[:, 1:] *= 25.0
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=256,
    )
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)


def make_tiny_model(out_dir: Path) -> Path:
    """Build the tiny model into out_dir unless it already holds this recipe version; return out_dir."""
    out_dir = Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-model-", dir=out_dir))
    try:
        _build(tmp)
        (out_dir / MARKER).unlink(missing_ok=True)
        for path in sorted(tmp.iterdir()):
            path.chmod(0o644)
            os.replace(path, out_dir / path.name)
        marker_tmp = tmp / MARKER
        marker_tmp.write_text(json.dumps(_recipe(), sort_keys=True) + "\n", encoding="utf-8")
        marker_tmp.chmod(0o644)
        os.replace(marker_tmp, out_dir / MARKER)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and build the model."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path, help="directory to hold the model (created if missing)")
    args = parser.parse_args(argv)
    out_dir: Path = args.out_dir
    already = is_complete(out_dir)
    make_tiny_model(out_dir)
    print(f"{'up to date' if already else 'built'}: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
