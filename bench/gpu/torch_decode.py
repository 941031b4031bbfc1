"""PyTorch + transformers on the same GPU: the peer of bench/gpu/decode.ts.

MistralForCausalLM / MixtralForCausalLM built from the same params as our library (random bf16
weights, sdpa attention), the same prompt and decode lengths, greedy tokens kept on the GPU, warm-up
steps excluded from the timing. Two peers from one model in one process:
  eager     the transformers loop as shipped: dynamic KV cache, eager mode;
  compiled  the fair peer: a static KV cache and the decode step under torch.compile
            (mode="reduce-overhead": inductor kernels replayed as CUDA graphs), the recipe of the
            transformers docs for fast decoding. Its compile time is reported, not timed.
Beside them, the prefill peer of bench/gpu/prefill.ts: one eager forward of --prefill-tokens random
ids at position 0 into a fresh dynamic cache (sdpa), the last position's logits only (as ours), one
untimed warm-up, the median of 3 timed.
Prints {"eager": ...} and {"prefill": ...} as soon as each is done (so a timed-out compile still leaves
them), then one JSON line with everything; a failed compiled peer or prefill is reported there
("compiled_error", "prefill_error"), not raised.
"""
import argparse
import inspect
import json
import statistics
import time
import traceback

import torch
import transformers


def build(params, layers, length):
    """The model; a sliding window no shorter than `length` (all positions the run reaches) is dropped:
    it masks nothing, and transformers' static sliding-window cache keeps a Python int that changes every
    step, which makes torch.compile recompile and re-record its CUDA graphs each token."""
    common = dict(
        vocab_size=params["vocab_size"], hidden_size=params["dim"], intermediate_size=params["hidden_dim"],
        num_hidden_layers=layers, num_attention_heads=params["n_heads"], num_key_value_heads=params["n_kv_heads"],
        head_dim=params["head_dim"], rms_norm_eps=params["norm_eps"], rope_theta=params["rope_theta"],
        max_position_embeddings=params["max_seq_len"], tie_word_embeddings=False,
    )
    window = params["sliding_window"][0] if params["sliding_window"] else None
    if window is not None and window >= length:
        window = None
    if params.get("moe"):
        cfg = transformers.MixtralConfig(**common, num_local_experts=params["moe"]["num_experts"],
                                         num_experts_per_tok=params["moe"]["num_experts_per_tok"], sliding_window=window)
        cls = transformers.MixtralForCausalLM
    else:
        cfg = transformers.MistralConfig(**common, sliding_window=window)
        cls = transformers.MistralForCausalLM
    cfg._attn_implementation = "sdpa"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = cls(cfg)
    return model.eval()


def timed(step, warmup, decode):
    """Runs warmup untimed steps, then decode timed ones; seconds of the timed ones."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(decode):
        step()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def eager(model, ids, args):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model(input_ids=ids, use_cache=True)
    torch.cuda.synchronize()
    prefill_ms = (time.perf_counter() - t0) * 1000
    past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)

    def step():
        nonlocal past, tok
        out = model(input_ids=tok, past_key_values=past, use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)

    seconds = timed(step, args.warmup, args.decode)
    return {"prefill_ms": prefill_ms, "ms_per_token": seconds * 1000 / args.decode, "tokens_per_second": args.decode / seconds}


PREFILL_TIMED = 3


def prefill(model, tokens, vocab):
    """Eager forward of `tokens` random ids at position 0, a fresh dynamic cache per call; ms per timed call."""
    ids = torch.randint(0, vocab, (1, tokens), device="cuda")
    # transformers >= 4.45 can skip the logits of every row but the last (older ones compute them all).
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}

    def once():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(input_ids=ids, use_cache=True, **keep)
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1000

    once()
    runs = [once() for _ in range(PREFILL_TIMED)]
    return {"tokens": tokens, "ms": statistics.median(runs), "runs_ms": runs, "last_logits_only": bool(keep)}


def static_cache(model, length):
    try:  # transformers 5: the layers are allocated on the first update (device and dtype from it)
        return transformers.StaticCache(config=model.config, max_cache_len=length)
    except TypeError:  # transformers 4
        return transformers.StaticCache(config=model.config, max_batch_size=1, max_cache_len=length,
                                        device="cuda", dtype=torch.bfloat16)


COMPILE_STEPS = 3  # cudagraph trees: warm-up run, recording, first replay


def compiled(model, ids, args):
    prompt = ids.shape[1]
    cache = static_cache(model, prompt + COMPILE_STEPS + args.warmup + args.decode)
    # Prefill eagerly into the static cache (compiling it too would only add compile time).
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    pos = torch.arange(prompt, device="cuda")
    out = model(input_ids=ids, past_key_values=cache, cache_position=pos, position_ids=pos.unsqueeze(0), use_cache=True)
    torch.cuda.synchronize()
    prefill_ms = (time.perf_counter() - t0) * 1000
    tok = out.logits[:, -1:].argmax(-1)

    @torch.compile(mode="reduce-overhead", fullgraph=args.fullgraph)
    def decode_one(tok, cache_position):
        logits = model(input_ids=tok, past_key_values=cache, cache_position=cache_position,
                       position_ids=cache_position.unsqueeze(0), use_cache=True).logits
        return logits[:, -1:].argmax(-1)

    cache_position = torch.tensor([prompt], device="cuda")

    def step():
        nonlocal tok
        torch.compiler.cudagraph_mark_step_begin()
        tok = decode_one(tok, cache_position).clone()
        cache_position.add_(1)

    # The first steps trace, compile, record the graphs: timed apart, excluded from the decode timing.
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(COMPILE_STEPS):
        step()
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    seconds = timed(step, args.warmup, args.decode)
    return {"prefill_ms": prefill_ms, "compile_s": compile_s, "ms_per_token": seconds * 1000 / args.decode,
            "tokens_per_second": args.decode / seconds, "mode": "reduce-overhead", "fullgraph": args.fullgraph}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", required=True, help="the ModelConfig JSON of our plan")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--peers", default="eager,compiled")
    ap.add_argument("--fullgraph", action="store_true")
    ap.add_argument("--prefill-tokens", type=int, default=512, help="the eager prefill timed on its own (0: none)")
    args = ap.parse_args()
    params = json.loads(args.params)
    peers = args.peers.split(",")
    started = time.perf_counter()
    model = build(params, params["n_layers"], max(args.prompt + COMPILE_STEPS + args.warmup + args.decode, args.prefill_tokens))
    build_s = time.perf_counter() - started
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ids = torch.randint(0, params["vocab_size"], (1, args.prompt), device="cuda")
    result = {"torch": torch.__version__, "transformers": transformers.__version__, "device": torch.cuda.get_device_name(),
              "layers": params["n_layers"], "weight_bytes": weight_bytes, "build_s": build_s}
    with torch.inference_mode():
        if "eager" in peers:
            result["eager"] = eager(model, ids, args)
            print(json.dumps({"eager": result["eager"]}), flush=True)
        if args.prefill_tokens > 0:
            try:
                result["prefill"] = prefill(model, args.prefill_tokens, params["vocab_size"])
                print(json.dumps({"prefill": result["prefill"]}), flush=True)
            except Exception as err:  # noqa: BLE001 - reported beside the decode peers, not required
                traceback.print_exc()
                result["prefill_error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:400]
            torch.cuda.empty_cache()
    if "compiled" in peers:
        try:
            with torch.no_grad():
                result["compiled"] = compiled(model, ids, args)
        except Exception as err:  # noqa: BLE001 - the compiled peer is reported, not required
            traceback.print_exc()
            result["compiled_error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:400]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
