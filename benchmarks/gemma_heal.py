"""Why the heal on teacher samples made Gemma 3 270M worse (issue 15): the heal text, the distillation
between the dense model and itself, and a few heal steps on each heal text.

Gemma 3 270M (the embedded ``gemma3-270m``, a base model; mixed Q5_0/Q4_K/Q6_K/Q8_0 GGUF dequantized to
float32), BOS-led windows. Steps, in the order printed:

1. bitsandbytes' NF4 round trip of random matrices of Gemma's widths (2048, and 1824 after a structured
   wave: no multiple of the 64-element block), and the NF4 copy ``quantize_linears_nf4`` makes of each.
2. Four heal texts of 16 x 128 tokens: the teacher's samples as the loop draws them (``sample_sequences``:
   BOS, then temperature 1 over the whole vocabulary), top-k 64 / top-p 0.95 samples, LLM-QAT's hybrid
   (BOS, a random non-special token, three greedy tokens, then temperature 1), and 128-token pieces of the
   WikiText-2 validation calibration windows. The dense model's cross-entropy and entropy on each.
3. ``micro_heal`` of the dense model with itself as teacher, one step at a negligible learning rate:
   the step's losses are those before any update, so the KD term must be 0 on a float base.
4. One structured wave of the default recipe (``PruneParams()``, 8 calibration windows); perplexity on
   4 x 512 of WikiText-2 test and the TinyStories slice; the pruned student's CE and KD (T = 2) on each text.
5. 10 heal steps (float base, batch 2 x 128, lr 3e-4) on each text: KD for the samples, the LM loss
   for the calibration pieces; perplexity after.

    PYTHONPATH=src ../shared/cpu .venv/bin/python benchmarks/gemma_heal.py 10
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import bitsandbytes as bnb
import torch
import torch.nn.functional as F

from bird_bone.data.windows import bos_token, calibration_windows, evaluation_windows, tokenize_text
from bird_bone.eval.perplexity import perplexity
from bird_bone.heal.qlora import distillation_loss, micro_heal, quantize_linears_nf4
from bird_bone.heal.samples import sample_sequences
from bird_bone.models.loading import load_model
from bird_bone.prune.config import PruneParams
from bird_bone.prune.step import prune_step

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
N, L = 16, 128  # heal sequences per text, tokens each
T0 = time.time()


def log(*values) -> None:
    print(f"[{time.time() - T0:6.1f}s]", *values, flush=True)


def nf4_round_trips() -> None:
    for shape in [(640, 2048), (640, 1824), (64, 96), (64, 128), (1824, 640)]:
        w = torch.randn(shape)
        q, state = bnb.functional.quantize_4bit(w, quant_type="nf4", blocksize=64)
        log("bnb nf4 round trip", shape, "rel err", round(float((bnb.functional.dequantize_4bit(q, state) - w).norm()
                                                                / w.norm()), 4))  # fmt: skip
        linear = torch.nn.Linear(shape[1], shape[0], bias=False)
        linear.weight.data = w.clone()
        copy_ = torch.nn.Sequential(linear)
        quantize_linears_nf4(copy_, ["0"])
        x = torch.randn(8, shape[1])
        log("  NF4 copy forward rel err", round(float((copy_(x) - x @ w.T).norm() / (x @ w.T).norm()), 4))


@torch.no_grad()
def ce_by_position(model, x) -> dict:
    """Mean next-token CE (also per quarter of the positions) and mean entropy of ``model`` on ``x``."""
    logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
    ce = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="none").view(x.shape[0], -1)
    logp = logits.log_softmax(-1)
    return {"ce": round(float(ce.mean()), 3), "ce_q": [round(float(c.mean()), 2) for c in ce.chunk(4, 1)],
            "entropy": round(float(-(logp.exp() * logp).sum(-1).mean()), 3)}  # fmt: skip


def heal_texts(model, tok, bos: int, calib: torch.Tensor) -> dict[str, torch.Tensor]:
    special = list(tok.all_special_ids)

    @torch.no_grad()
    def generate(prompt, n, **kw):
        return model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                              min_new_tokens=n, pad_token_id=0, **kw)  # fmt: skip

    texts = {"T1_full": sample_sequences(model, N, L, bos=bos, exclude=special, seed=0, batch_size=16)}
    torch.manual_seed(0)
    texts["topk64_topp95"] = generate(torch.full((N, 1), bos), L - 1, do_sample=True, temperature=1.0, top_k=64,
                                      top_p=0.95)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    allowed = torch.ones(model.config.vocab_size, dtype=torch.bool)
    allowed[special] = False
    choices = allowed.nonzero().flatten()
    start = torch.cat([torch.full((N, 1), bos), choices[torch.randint(len(choices), (N, 1), generator=g)]], 1)
    greedy = generate(start, 3, do_sample=False, top_k=None, top_p=None, temperature=None)
    torch.manual_seed(0)
    texts["llmqat_hybrid"] = generate(greedy, L - greedy.shape[1], do_sample=True, temperature=1.0, top_k=0,
                                      top_p=1.0)  # fmt: skip
    texts["calibration"] = torch.cat([calib[:, :L], calib[:, L : 2 * L]], 0)[:N].clone()
    texts["calibration"][:, 0] = bos
    return texts


def main(steps: int) -> None:
    torch.set_num_threads(2)
    nf4_round_trips()
    loaded = load_model("gemma3-270m")
    model, tok = loaded.model.eval(), loaded.tokenizer
    bos = bos_token(tok)
    calib_text = tokenize_text(tok, (SHARED / "wikitext2-valid-tokenized.txt").read_text())
    calib = calibration_windows(calib_text, 512, 8, 0, "calibration", bos)
    texts = heal_texts(model, tok, bos, calib)
    for name, x in texts.items():
        for i in range(3):
            log(name, i, repr(tok.decode(x[i, :60]))[:300])
        log(name, "teacher", ce_by_position(model, x))
    for base in ("full", "nf4"):  # step 1's losses come before any update
        r = micro_heal(copy.deepcopy(model), texts["T1_full"], {}, 1, base=base, teacher=model, kd_weight=1.0,
                       lm_weight=0.0, window_length=L, bos=bos, progress=False, learning_rate=1e-12)  # fmt: skip
        log("dense vs dense", base, "kd", r.kd, "ce", r.ce)
    params, student = PruneParams(), copy.deepcopy(model)
    prune_step(student, params.method, params.amount(1), calib, batch_size=4, seed=0, **params.options())
    student.eval()
    scored = {n: evaluation_windows(tokenize_text(tok, (SHARED / n).read_text()), 512, 4, n, bos)
              for n in ("wikitext2-raw-test.txt", "tinystories-valid.txt")}  # fmt: skip

    def ppl(m):
        return {n[:5]: round(perplexity(m, w, batch_size=1, progress=False).perplexity, 3) for n, w in scored.items()}

    @torch.no_grad()
    def kd(s, x):
        return round(float(distillation_loss(s(input_ids=x, use_cache=False).logits[:, :-1],
                                             model(input_ids=x, use_cache=False).logits[:, :-1], 2.0)), 3)  # fmt: skip

    log("dense ppl", ppl(model))
    log("pruned ppl", ppl(student))
    for name, x in texts.items():
        log(name, "pruned student", ce_by_position(student, x), "kd T2", kd(student, x))
    for base in ("full", "nf4"):
        r = micro_heal(copy.deepcopy(student), texts["T1_full"], {}, 1, base=base, teacher=model, kd_weight=1.0,
                       lm_weight=0.0, window_length=L, bos=bos, progress=False, learning_rate=1e-12)  # fmt: skip
        log("pruned vs dense via micro_heal", base, "kd", r.kd, "ce", r.ce)
    for name, x in texts.items():
        healed = copy.deepcopy(student)
        losses = dict(teacher=model, kd_weight=1.0, lm_weight=0.0) if name != "calibration" else dict(lm_weight=1.0)
        r = micro_heal(healed, x, {}, steps, base="full", window_length=L, bos=bos, progress=False,
                       learning_rate=3e-4, batch_size=2, **losses)  # fmt: skip
        healed.eval()
        log(name, f"healed {steps}", "loss", [round(v, 3) for v in r.loss[:2] + r.loss[-2:]], "ppl", ppl(healed))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
