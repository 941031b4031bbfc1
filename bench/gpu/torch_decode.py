"""PyTorch + transformers on the same GPU: the peer of bench/gpu/decode.ts.

MistralForCausalLM / MixtralForCausalLM built from the same params as our library (random bf16
weights, sdpa attention, dynamic KV cache, eager mode), the same prompt and decode lengths,
greedy tokens kept on the GPU. Prints one JSON line.
"""
import argparse
import json
import time

import torch
import transformers


def build(params, layers):
    common = dict(
        vocab_size=params["vocab_size"], hidden_size=params["dim"], intermediate_size=params["hidden_dim"],
        num_hidden_layers=layers, num_attention_heads=params["n_heads"], num_key_value_heads=params["n_kv_heads"],
        head_dim=params["head_dim"], rms_norm_eps=params["norm_eps"], rope_theta=params["rope_theta"],
        max_position_embeddings=params["max_seq_len"], tie_word_embeddings=False,
    )
    window = params["sliding_window"][0] if params["sliding_window"] else None
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", required=True, help="the ModelConfig JSON of our plan")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=8)
    args = ap.parse_args()
    params = json.loads(args.params)
    started = time.perf_counter()
    model = build(params, params["n_layers"])
    build_s = time.perf_counter() - started
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ids = torch.randint(0, params["vocab_size"], (1, args.prompt), device="cuda")
    with torch.inference_mode():
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

        for _ in range(args.warmup):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.decode):
            step()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    print(json.dumps({
        "torch": torch.__version__, "transformers": transformers.__version__, "device": torch.cuda.get_device_name(),
        "layers": params["n_layers"], "weight_bytes": weight_bytes, "build_s": build_s, "prefill_ms": prefill_ms,
        "ms_per_token": seconds * 1000 / args.decode, "tokens_per_second": args.decode / seconds,
    }))


if __name__ == "__main__":
    main()
