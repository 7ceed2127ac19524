"""A Hugging Face-format Llama through llmos against `transformers` running the same folder in-process.

One run, one folder: a tiny random Llama (`--layers` layers, d `--d-model`,
`--heads` heads, `--kv-heads` KV heads: grouped-query attention) with a
byte-level BPE tokenizer of `--vocab` tokens trained with `tokenizers` on the
standard library's sources, written with `save_pretrained` into the kernel's
models directory and loaded by both sides from there (same weights, same
tokenizer; transformers' model and inputs on the torch device of `--device`,
`raw_device`, as in `llmos bench generate`). Greedy decoding of `--new`
tokens from `--prompt`-token prompts:
  single stream  `transformers`' own `generate(do_sample=False,
                 use_cache=True)` in this process (what a user would
                 otherwise pick) vs one generate call through llmos (paged
                 KV, kernel, driver host, streaming).
                 `hf_single_stream_ratio` = llmos tokens/s / transformers tokens/s.
  batching       `--procs` llmos processes generating at once vs the same
                 requests one after another through llmos.
                 `hf_batching_speedup` = tokens/s at once / one by one.
Rounds, pairs and best-of as in `llmos bench generate` (the same timing
loop). `outputs_match`: llmos's greedy text equals transformers' greedy
text of the same prompt, decoded by transformers' own tokenizer.
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile

from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.syscalls import runtime
from llmos.userland.client import Client

from .generate import generation_rounds, raw_device
from .status import status_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `llmos bench hf`."""
    parser.add_argument("--device", default="cpu", help="device for both sides (default: cpu)")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=2048, help="BPE vocabulary (default 2048)")
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens (default 32)")
    parser.add_argument("--new", type=int, default=128, help="tokens to generate per request (default 128)")
    parser.add_argument("--procs", type=int, default=8, help="concurrent processes (default 8)")
    parser.add_argument("--repeats", type=int, default=4, help="timed rounds (default 4; each figure is its best)")
    parser.add_argument("--pairs", type=int, default=4, help="transformers and llmos single-stream runs per round (default 4)")


_say = status_line("hf")


def make_folder(folder: str, args: argparse.Namespace):
    """Write the tiny Llama folder; return (transformers model, transformers tokenizer, sample texts)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from llmos.drivers.models.train import stdlib_files

    texts = []
    for path in stdlib_files()[:200]:
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)  # fmt: skip
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=args.d_model, intermediate_size=args.d_model * 8 // 3 // 8 * 8,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(512, args.prompt + args.new), bos_token_id=tok.token_to_id("<s>"),
        eos_token_id=tok.token_to_id("</s>"), tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    return model, fast, texts


def run(args: argparse.Namespace) -> dict:
    """Write the folder, boot a kernel on it, time both sides, shut down."""
    try:
        import torch
        import transformers  # noqa: F401 (the baseline)
    except ImportError:
        raise SystemExit("llmos bench hf compares against transformers: pip install transformers") from None
    if min(args.repeats, args.pairs, args.procs) < 1:
        raise SystemExit("--repeats, --pairs and --procs must be at least 1")
    tmp = tempfile.mkdtemp(prefix="llmos-bench-")
    os.chmod(tmp, 0o700)
    models_dir = os.path.join(tmp, "models")
    _say("training the tokenizer, writing the folder")
    model, tok, texts = make_folder(os.path.join(models_dir, "tiny-llama"), args)
    dev = raw_device(args.device)
    model = model.to(dev)  # after the folder was written from the CPU
    prompts = [tok(text[1000:4000])["input_ids"][: args.prompt] for text in texts[: args.procs]]
    blocks = args.procs * -(-(args.prompt + args.new) // 16) + 8

    def reference() -> list[int]:
        with torch.no_grad():
            out = model.generate(torch.tensor(prompts[:1], device=dev), max_new_tokens=args.new, do_sample=False, use_cache=True,
                                 pad_token_id=tok.eos_token_id)  # fmt: skip
        return out[0, args.prompt :].tolist()

    result: dict = {"config": _shape(args), "device": args.device, "raw_device": dev,
                    "threads": torch.get_num_threads(), "transformers": transformers.__version__}  # fmt: skip
    kcfg = KernelConfig(name=f"bench-hf-{os.getpid()}", runtime_dir=tmp, models_dir=models_dir, log_level="error")
    with boot.start(kcfg) as kp, Client(kp.address, name="bench-hf") as c:
        handle = c.model_load(args.device, path="tiny-llama", kv_blocks=blocks, cache=False).model  # as bench generate
        rounds, raw_ids, done, batched_match = asyncio.run(
            generation_rounds(kp.address, c, handle, reference, prompts, args, say=_say)
        )
        best = {side: min(r[side] for r in rounds) for side in rounds[0]}
        result["outputs_match"] = done.ids == raw_ids and done.text == tok.decode(raw_ids, skip_special_tokens=True)
        result["batched_outputs_match"] = batched_match
        tokens = len(raw_ids)  # transformers' own count (it stops at EOS, as llmos does)
        result.update(
            hf_single_tok_s=round(tokens / best["raw"], 1),
            llmos_single_tok_s=round(done.tokens / best["single"], 1),
            hf_single_stream_ratio=round((done.tokens / best["single"]) / (tokens / best["raw"]), 3),
            hf_single_stream_ratio_median=round(statistics.median(r["raw"] / r["single"] for r in rounds), 3),
            procs=args.procs,
            sequential_tok_s=round(args.procs * args.new / best["one by one"], 1),
            concurrent_tok_s=round(args.procs * args.new / best["at once"], 1),
            hf_batching_speedup=round(best["one by one"] / best["at once"], 3),
            hf_batching_speedup_median=round(statistics.median(r["one by one"] / r["at once"] for r in rounds), 3),
        )
        c.model_free(handle)
    runtime.remove(tmp)
    print("\r" + " " * 80 + "\r", end="", file=sys.stderr, flush=True)
    return result


def _shape(args: argparse.Namespace) -> dict:
    """The model's shape, as the options gave it."""
    return {"d_model": args.d_model, "layers": args.layers, "heads": args.heads, "kv_heads": args.kv_heads, "vocab": args.vocab}


def report(r: dict) -> str:
    """A table for people."""
    cfg = r["config"]
    return "\n".join(
        [
            f"tiny Llama d_model {cfg['d_model']}, {cfg['layers']} layers, {cfg['heads']} heads / {cfg['kv_heads']} KV heads, "
            f"{cfg['vocab']}-token BPE on {r['device']}, transformers on {r['raw_device']} ({r['threads']} torch threads, transformers {r['transformers']}); "
            f"greedy texts match: {r['outputs_match']}, batched texts match: {r['batched_outputs_match']}",
            f"single stream   transformers {r['hf_single_tok_s']:8.1f} tok/s   llmos {r['llmos_single_tok_s']:8.1f} tok/s"
            f"   hf_single_stream_ratio {r['hf_single_stream_ratio']:.3f}  (target >= 1.0; median of rounds "
            f"{r['hf_single_stream_ratio_median']:.3f})",
            f"{r['procs']} processes     one by one {r['sequential_tok_s']:8.1f} tok/s   at once {r['concurrent_tok_s']:8.1f} tok/s"
            f"   hf_batching_speedup {r['hf_batching_speedup']:.3f}  (target >= 3; median of rounds "
            f"{r['hf_batching_speedup_median']:.3f})",
        ]
    )
