"""Wan2.1-1.3B-sized transformer pass with block-sparse self-attention, and FlexAttention kernel tuning
(issue 17, item 5). One CUDA GPU, a few minutes; torch + diffusers (0.42) only.

    python benchmarks/gpu_wan_pass.py --out-dir $OUT            # GPU: kernel tuning, then the pass
    python benchmarks/gpu_wan_pass.py --toy                      # CPU, seconds: toy model, eager flex, checks

Part 1 (kernel tuning, --tune, default on GPU): the radial pattern (static; spatial band that halves as the
frame distance doubles, frame 0 a sink) at block density 0.25 on the Wan 480p attention shape (12 heads x 128,
21 x 30 x 52 latent grid = 32,760 tokens padded to 32,768, bf16), timed as compiled `flex_attention` with a
cached BlockMask under a handful of Triton `kernel_options` (BLOCK_M / BLOCK_N / num_warps / num_stages), at
block-table sizes 128 and 64, and flex with a full mask under the default and the best options; against
dense `F.scaled_dot_product_attention` (torch's pick, flash and cuDNN forced). CUDA events, median.

Part 2 (the pass): a random-weight `diffusers.WanTransformer3DModel` with the Wan2.1-T2V-1.3B config
(30 layers, 12 heads x 128, ffn 8960), bf16 (with the modules diffusers keeps in fp32 kept in fp32),
latents (1, 16, 21, 60, 104) -> 32,760 tokens, text (1, 512, 4096), timestep 500. Timed (median of a few
passes after warm-up):
  dense     diffusers' own WanAttnProcessor (dispatch_attention_fn, native SDPA);
  seam      the processor below with dense SDPA (checks that it reproduces Wan's prelude);
  stub      the processor with the attention call replaced by a zero-cost stub (output = q): the pass
            minus self-attention, so attention share = (dense - stub) / dense (the Amdahl limit);
  sparse    the processor calling compiled flex_attention with the radial block mask at density 0.25
            (default kernel options, and the best options from part 1 when they differ).
Cross-attention (attn2) keeps diffusers' processor. Reports dense / sparse ms, speedup, attention share and
the max abs / relative L2 difference of the sparse output against dense (a sanity figure, not quality).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import sys
import time

import gpu_attention as ga  # same folder: timing, forced SDPA backends, the kernel benchmark's q/k/v
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

T0 = time.perf_counter()
_FROM_KV_HAS_Q = "compute_q_blocks" in inspect.signature(BlockMask.from_kv_blocks).parameters

WAN_1_3B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
TOY = dict(WAN_1_3B, num_attention_heads=2, attention_head_dim=32, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2)


def log(*args) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s]", *args, flush=True)


# ----------------------------------------------------------------------------------------------- masks
def radial_table(grid, heads, target, bs, device):
    """Radial block table (1, H, Nb, Nb) bool at block size bs, frame-major tokens: a query block sees its
    own frame, frame 0 (sink) and, at frame distance d, a spatial band whose half-width halves as d doubles;
    the band scale is bisected to the target block density. Same rule as gpu_attention.pattern_radial."""
    fr, hh, ww = grid
    fs = hh * ww
    s = fr * fs
    nb = -(-s // bs)
    centre = (torch.arange(nb, device=device) * bs + bs // 2).clamp(max=s - 1)
    f, pos = centre // fs, centre % fs
    d = (f[:, None] - f[None, :]).abs()
    ds = (pos[:, None] - pos[None, :]).abs().float()
    bitlen = torch.floor(torch.log2(d.clamp(min=1).float())) + 1

    def allowed_for(scale):
        half = (fs * scale / 2 ** (bitlen - 1)).clamp(min=bs / 2)
        return (d == 0) | (f[None, :] == 0) | (ds <= half + bs / 2)

    dens = lambda sc: allowed_for(sc).float().mean().item()
    lo, hi = 0.0, 2.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if dens(mid) < target else (lo, mid)
    scale = min([lo, hi], key=lambda c: abs(dens(c) - target))
    allowed = allowed_for(scale)[None, None].expand(1, heads, nb, nb).contiguous()
    return allowed, dict(band_scale=round(scale, 4), density=round(dens(scale), 4), block=bs, blocks=nb)


def block_mask_from_table(allowed, seq_len, bs):
    """BlockMask from a boolean block table (1, H, Nq, Nk) at block size bs, with a mask_mod encoding the
    same table and the padding (keys >= seq_len) for the eager path. Blocks inside the sequence are 'full';
    the last key block, which holds the padding, is 'partial'."""
    nk = allowed.shape[-1]
    padded_col = torch.zeros(nk, dtype=torch.bool, device=allowed.device)
    if seq_len % bs:
        padded_col[-1] = True
    full, part = allowed & ~padded_col, allowed & padded_col
    table_t = allowed.contiguous()

    def mask_mod(b, h, q_idx, kv_idx):
        return table_t[0, h, q_idx // bs, kv_idx // bs] & (kv_idx < seq_len)

    def table(m):
        num = m.sum(-1, dtype=torch.int32)
        idx = torch.argsort((~m).to(torch.uint8), dim=-1, stable=True).to(torch.int32)
        return num.contiguous(), idx.contiguous()

    kv_num, kv_idx = table(part)
    full_num, full_idx = table(full)
    kw = dict(BLOCK_SIZE=bs, mask_mod=mask_mod, seq_lengths=(nk * bs, nk * bs))
    if _FROM_KV_HAS_Q:
        kw["compute_q_blocks"] = False  # inference only
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, **kw)


def dense_bool_mask(allowed, seq_len, bs):
    """(1, H, S, S) boolean mask equal to the block table (small sizes only)."""
    blk = torch.arange(seq_len, device=allowed.device) // bs
    return allowed[:, :, blk][:, :, :, blk]


# ------------------------------------------------------------------------------------------------ timing
def sampled_err(q, k, v, o, allowed, seq_len, bs, q_blocks):
    """Max abs error of flex output o (padded layout) on some query blocks against an fp32 masked reference."""
    rows = torch.cat([torch.arange(b * bs, min((b + 1) * bs, seq_len), device=q.device) for b in q_blocks])
    cols = torch.arange(q.shape[2], device=q.device)
    scores = q[:, :, rows].float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1])
    mask = allowed[:, :, rows // bs][:, :, :, cols // bs] & (cols < seq_len)
    ref = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v.float()
    return (o[:, :, rows].float() - ref).abs().max().item()


# --------------------------------------------------------------------------------------- part 1: tuning
def opts_label(o):
    return "default" if not o else ",".join(f"{k}={v}" for k, v in o.items())


def kopts(bm, bn, w, s, **extra):
    return dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s, **extra)


def tune(args, device, flex, res, save):

    grid = tuple(int(x) for x in args.tune_grid.split(",")) if args.tune_grid else (21, 30, 52)
    heads, dim = (2, 32) if args.toy else (12, 128)
    s = grid[0] * grid[1] * grid[2]
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = ga.structured_qkv(grid, heads, dim, device, torch.bfloat16, gen)
    out = dict(
        shape=dict(
            grid=list(grid),
            tokens=s,
            heads=heads,
            head_dim=dim,
            dtype="bfloat16",
            pattern="radial",
            target_density=args.density,
        ),
        dense={},
        runs=[],
    )
    res["tuning"] = out
    dense = out["dense"]
    dense["sdpa_default_ms"] = ga.time_ms(lambda: F.scaled_dot_product_attention(q, k, v), 3, args.iters, device)
    for be in ("flash", "cudnn"):
        try:
            dense[f"sdpa_{be}_ms"] = ga.time_ms(ga.sdpa_backend_fn(q, k, v, be), 3, args.iters, device)
        except Exception as e:
            dense[f"sdpa_{be}_ms"] = None
            dense[f"sdpa_{be}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    log("dense SDPA", {kk: (round(vv, 3) if isinstance(vv, float) else vv) for kk, vv in dense.items()})
    best_dense = min(
        x for x in (dense["sdpa_default_ms"], dense.get("sdpa_flash_ms"), dense.get("sdpa_cudnn_ms")) if x is not None
    )

    setups = {}

    def setup(bs, kind):
        key = (bs, kind)
        if key not in setups:
            nb = -(-s // bs)
            if kind == "full":
                allowed = torch.ones(1, heads, nb, nb, dtype=torch.bool, device=device)
                meta = dict(density=1.0, block=bs, blocks=nb)
            else:
                allowed, meta = radial_table(grid, heads, args.density, bs, device)
            sp = nb * bs
            pad = lambda x: F.pad(x, (0, 0, 0, sp - s))
            setups[key] = (allowed, block_mask_from_table(allowed, s, bs), pad(q), pad(k), pad(v), meta)
        return setups[key]

    def run(bs, kind, opts, tag=""):
        allowed, bm, qp, kp, vp, meta = setup(bs, kind)
        row = dict(mask=kind, block=bs, density=meta["density"], kernel_options=opts_label(opts), tag=tag)
        try:
            t = time.perf_counter()
            with torch.no_grad():
                o = flex(qp, kp, vp, block_mask=bm, kernel_options=dict(opts) if opts else None)
            ga.sync(device)
            row["first_call_s"] = round(time.perf_counter() - t, 2)
            nb = allowed.shape[-1]
            row["max_abs_err_sampled"] = sampled_err(qp, kp, vp, o, allowed, s, bs, [0, nb // 2, nb - 1])
            del o
            ms = ga.time_ms(
                lambda: flex(qp, kp, vp, block_mask=bm, kernel_options=dict(opts) if opts else None),
                3,
                args.iters,
                device,
            )
            row.update(
                ms=round(ms, 3),
                speedup_vs_sdpa=round(dense["sdpa_default_ms"] / ms, 3),
                speedup_vs_best_dense=round(best_dense / ms, 3),
            )
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        out["runs"].append(row)
        log("tune", json.dumps(row))
        save()
        return row

    budget = lambda: time.perf_counter() - T0 < args.tune_budget
    cfgs128 = [
        {},
        kopts(128, 128, 8, 2),
        kopts(128, 128, 8, 3),
        kopts(128, 64, 8, 2),
        kopts(128, 64, 8, 4),
        kopts(128, 64, 4, 3),
        kopts(64, 128, 4, 3),
        kopts(64, 64, 4, 3),
    ]
    rows = []
    for o in cfgs128:
        if not budget():
            log("tuning budget spent; skipping the rest")
            break
        rows.append((o, run(128, "radial", o)))
    ok = [(o, r) for o, r in rows if "ms" in r]
    best_opts = min(ok, key=lambda x: x[1]["ms"])[0] if ok else {}
    # the flags that skip work the kernel need not do here (every row has unmasked keys; q pre-scaled)
    if budget() and ok:
        for extra in (dict(ROWS_GUARANTEED_SAFE=True), dict(ROWS_GUARANTEED_SAFE=True, PRESCALE_QK=True)):
            o = dict(best_opts, **extra)
            r = run(128, "radial", o, tag="best+flags")
            if "ms" in r:
                ok.append((o, r))
        best_opts = min(ok, key=lambda x: x[1]["ms"])[0]
    for o in [kopts(64, 64, 4, 3), kopts(64, 64, 8, 3), kopts(64, 64, 4, 4)] if budget() else []:
        run(64, "radial", o)
    for o in [{}, best_opts] if best_opts else [{}]:
        if budget():
            run(128, "full", o)
    dense["sdpa_default_ms_again"] = ga.time_ms(lambda: F.scaled_dot_product_attention(q, k, v), 3, args.iters, device)
    good = [r for r in out["runs"] if "ms" in r and r["mask"] == "radial"]
    if good:
        b = min(good, key=lambda r: r["ms"])
        d = [r for r in good if r["kernel_options"] == "default" and r["block"] == 128]
        out["best"] = dict(
            b,
            default_ms=d[0]["ms"] if d else None,
            reached_3x_vs_sdpa=b["speedup_vs_sdpa"] >= 3.0,
            reached_3x_vs_best_dense=b["speedup_vs_best_dense"] >= 3.0,
        )
        log("best sparse", json.dumps(out["best"]))
    out["best_opts_block128"] = best_opts
    save()
    q = k = v = setups = None  # frees them; a `del` would leave the closures above reading undefined names
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return best_opts


# -------------------------------------------------------------------------------------- part 2: the pass
def rope_apply(x, cos, sin):
    """Wan's rotary application (diffusers WanAttnProcessor.apply_rotary_emb), x (B, S, H, D)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class SeamWanSelfAttnProcessor:
    """Wan self-attention (attn1) prelude as in diffusers 0.42 WanAttnProcessor -- q/k/v projections (fused
    or not), norm_q / norm_k across heads, head split, rotary embedding -- then a pluggable attention call
    on (B, H, S, D), then to_out. mode: 'sdpa' dense, 'stub' (output = q, zero cost), 'flex' block-sparse
    (padded to the block mask's length), 'masked' dense SDPA with the block table as a boolean mask (small)."""

    def __init__(self, mode, flex=None, block_mask=None, padded=None, kernel_options=None, dense_mask=None):
        self.mode, self.flex, self.block_mask, self.padded = mode, flex, block_mask, padded
        self.kernel_options, self.dense_mask = kernel_options, dense_mask

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        assert encoder_hidden_states is None and attn.add_k_proj is None, "self-attention only"
        if getattr(attn, "fused_projections", False):
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))
        if rotary_emb is not None:
            query, key = rope_apply(query, *rotary_emb), rope_apply(key, *rotary_emb)
        q, k, v = (x.transpose(1, 2) for x in (query, key, value))  # (B, H, S, D)
        s = q.shape[2]
        if self.mode == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        elif self.mode == "stub":
            o = q
        elif self.mode == "masked":
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.dense_mask)
        else:
            pad = lambda x: F.pad(x, (0, 0, 0, self.padded - s))
            o = self.flex(
                pad(q),
                pad(k),
                pad(v),
                block_mask=self.block_mask,
                kernel_options=dict(self.kernel_options) if self.kernel_options else None,
            )[:, :, :s]
        hidden_states = o.transpose(1, 2).flatten(2, 3).type_as(query)
        hidden_states = attn.to_out[0](hidden_states)
        return attn.to_out[1](hidden_states)


def build_model(cfg, device, dtype):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    with torch.device(device):
        model = WanTransformer3DModel(**cfg)
    keep = tuple(model._keep_in_fp32_modules or ())
    if dtype != torch.float32:  # as from_pretrained(torch_dtype=bf16): _keep_in_fp32_modules stay fp32
        for name, p in model.named_parameters():
            if not any(m in name.split(".") for m in keep):
                p.data = p.data.to(dtype)
    return model.eval()


def wan_pass(args, device, flex, res, save, best_opts):
    import diffusers

    toy = args.toy
    cfg = TOY if toy else WAN_1_3B
    dtype = torch.float32 if toy else torch.bfloat16
    lat_shape = (1, 16, 3, 8, 12) if toy else (1, 16, 21, 60, 104)
    bs = 16 if toy else 128
    density = 0.5 if toy else args.density
    out = dict(
        diffusers=diffusers.__version__,
        config={k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        dtype=str(dtype).replace("torch.", ""),
        latents=list(lat_shape),
        text=[1, 512, cfg["text_dim"]],
        timestep=500,
        block=bs,
    )
    res["pass"] = out
    t = time.perf_counter()
    model = build_model(cfg, device, dtype)
    ga.sync(device)
    out["build_s"] = round(time.perf_counter() - t, 1)
    out["params_M"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    gen = torch.Generator(device=device).manual_seed(1)
    lat = torch.randn(lat_shape, generator=gen, device=device).to(dtype)
    txt = torch.randn(1, 512, cfg["text_dim"], generator=gen, device=device).to(dtype)
    ts = torch.tensor([500], device=device)
    p = cfg["patch_size"]
    grid = (lat_shape[2] // p[0], lat_shape[3] // p[1], lat_shape[4] // p[2])
    s = grid[0] * grid[1] * grid[2]
    heads = cfg["num_attention_heads"]
    allowed, meta = radial_table(grid, heads, density, bs, device)
    nb = allowed.shape[-1]
    bm = block_mask_from_table(allowed, s, bs)
    out.update(grid=list(grid), tokens=s, padded_tokens=nb * bs, radial=meta)
    log(f"model {out['params_M']}M params built in {out['build_s']}s; grid {grid} = {s} tokens, radial {meta}")

    blocks = model.blocks
    originals = [b.attn1.processor for b in blocks]

    def set_proc(make):
        for b, orig in zip(blocks, originals):
            b.attn1.set_processor(orig if make is None else make())

    def fwd():
        return model(lat, ts, txt, return_dict=False)[0]

    iters, warm = (2, 1) if toy else (args.pass_iters, 2)
    times, outs = {}, {}

    def measure(name, make, keep_out=True):
        set_proc(make)
        t = time.perf_counter()
        with torch.no_grad():
            o = fwd()
        ga.sync(device)
        first = time.perf_counter() - t
        if keep_out:
            outs[name] = o.float()
        del o
        times[name] = round(ga.time_ms(fwd, warm - 1, iters, device), 2)
        log(f"pass {name}: {times[name]} ms (first call {first:.1f}s)")
        out["times_ms"] = times
        save()

    measure("dense", None)
    measure("seam_sdpa", lambda: SeamWanSelfAttnProcessor("sdpa"))
    measure("stub", lambda: SeamWanSelfAttnProcessor("stub"), keep_out=False)
    measure("sparse_default", lambda: SeamWanSelfAttnProcessor("flex", flex, bm, nb * bs))
    if best_opts:
        measure("sparse_tuned", lambda: SeamWanSelfAttnProcessor("flex", flex, bm, nb * bs, kernel_options=best_opts))
        out["tuned_kernel_options"] = best_opts
    if toy:  # the sparse pass against dense SDPA with the equivalent boolean mask; density 1.0 against dense
        measure("masked_ref", lambda: SeamWanSelfAttnProcessor("masked", dense_mask=dense_bool_mask(allowed, s, bs)))
        full = torch.ones_like(allowed)
        measure(
            "flex_full", lambda: SeamWanSelfAttnProcessor("flex", flex, block_mask_from_table(full, s, bs), nb * bs)
        )
    set_proc(None)

    ref = outs["dense"]

    def diff(name):
        d = outs[name] - ref
        return dict(max_abs=d.abs().max().item(), rel_l2=(d.norm() / ref.norm()).item())

    out["dense_output"] = dict(
        max_abs=ref.abs().max().item(), rms=ref.pow(2).mean().sqrt().item(), finite=bool(torch.isfinite(ref).all())
    )
    out["diff_vs_dense"] = {n: diff(n) for n in outs if n != "dense"}
    if toy:
        d = outs["sparse_default"] - outs["masked_ref"]
        out["diff_sparse_vs_masked_ref"] = d.abs().max().item()
    d = times["dense"]
    sp_name = min((n for n in times if n.startswith("sparse")), key=times.get)
    share = (d - times["stub"]) / d
    out["summary"] = dict(
        dense_ms=d,
        sparse_ms=times[sp_name],
        sparse_variant=sp_name,
        speedup=round(d / times[sp_name], 3),
        speedup_default_options=round(d / times["sparse_default"], 3),
        attention_share=round(share, 4),
        amdahl_limit_density=round(1 / (1 - share + share * density), 3),
        amdahl_limit_infinite=round(1 / (1 - share), 3) if share < 1 else None,
        self_attention_ms_per_layer_dense=round((d - times["stub"]) / cfg["num_layers"], 3),
        self_attention_ms_per_layer_sparse=round((times[sp_name] - times["stub"]) / cfg["num_layers"], 3),
    )
    log("pass summary", json.dumps(out["summary"]))
    log("diff vs dense", json.dumps(out["diff_vs_dense"]))
    save()
    model = outs = None  # frees them; a `del` would leave the closures above reading undefined names
    return out


# ------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=os.environ.get("OUT", "."))
    ap.add_argument("--toy", action="store_true", help="CPU check: 2-layer toy model, eager flex, no tuning")
    ap.add_argument("--no-tune", action="store_true")
    ap.add_argument("--no-pass", action="store_true")
    ap.add_argument("--density", type=float, default=0.25)
    ap.add_argument("--iters", type=int, default=20, help="kernel timings")
    ap.add_argument("--pass-iters", type=int, default=5)
    ap.add_argument(
        "--tune-grid",
        default=None,
        help="tuning shape F,H,W (default 21,30,52; with --toy: "
        "runs the tuning loop with eager flex at this shape, a dry run of the control flow)",
    )
    ap.add_argument("--tune-budget", type=float, default=200.0, help="stop tuning past this many seconds")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.toy else "cpu")
    res = dict(
        torch=torch.__version__,
        python=platform.python_version(),
        command=" ".join([sys.executable] + sys.argv),
        device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    )
    print("torch", torch.__version__, "| device", res["device"], flush=True)
    path = os.path.join(args.out_dir, "wan_pass_toy.json" if args.toy else "wan_pass.json")

    def save():
        os.makedirs(args.out_dir, exist_ok=True)
        with open(path, "w") as fh:
            json.dump(res, fh, indent=1)

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    if args.toy:
        flex = flex_attention  # eager: dense reference with the mask_mod (compiled CPU flex is slow to build)
        best = tune(args, device, flex, res, save) if args.tune_grid else {}
    else:
        if device.type != "cuda":
            print("no CUDA device: use --toy on CPU", flush=True)
            return 1
        flex = torch.compile(flex_attention, dynamic=False)
        best = {} if args.no_tune else tune(args, device, flex, res, save)
    if not args.no_pass:
        wan_pass(args, device, flex, res, save, best)
    res["total_s"] = round(time.perf_counter() - T0, 1)
    save()
    log("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
