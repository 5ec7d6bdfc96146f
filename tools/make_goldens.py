#!/usr/bin/env python3
"""Golden values for the C++ tests, computed with the venv's transformers (the reference implementation).

Writes into OUT (default .cache/golden), each part in a temporary directory renamed into place:
  smollm2/   prompts.json: the parameter count, and for each prompt its text, token ids, and 64 greedy tokens (transformers with its KV cache,
             never stopping at EOS); logits.safetensors: "logits.<i>" = fp32 logits [T, vocab] of prompt i. Two of the
             three prompts are chat-templated (apply_chat_template), so prompts.json is also the ChatML golden.
  tiny/      model/: a random tiny Llama saved by transformers (GQA, untied embeddings, explicit head_dim, Llama-3 rope
             scaling); golden.safetensors: tokens [2, 24], logits of the whole batch, and the logits of a packed row
             ("packed.*": three documents in one row, each document's logits computed by transformers on its own), and
             "hidden.<i>": output_hidden_states[i] of the batch for i < num_hidden_layers (EAGLE-3's taps).
  families/  <family>/model + golden.safetensors for llama3, qwen2, qwen2-window, qwen3 and mistral (FAMILIES below):
             tokens [2, 24], their logits, and 24 greedy tokens after a fixed prompt (transformers' KV cache).
  tokenizer/ text.txt: a >= 100k-character text (English, other scripts, emoji, code, numbers, odd whitespace, special
             tokens); smollm2_ids.json: the SmolLM2 tokenizer.json encoding of it (no special tokens added);
             <config>/tokenizer.json, ids.json, decoded.txt for each of TOKENIZER_CONFIGS: a BPE tokenizer trained on
             the text with the `tokenizers` library in that configuration (the normalizers, pre-tokenizers and
             decoders of Llama 3, Qwen2, GPT-4o, Mistral and Llama 2 exports), the text's ids and their decoding.
  chat/      <family>/tokenizer_config.json (the family's shipped chat template and special tokens) and golden.json
             (conversations and what apply_chat_template renders of each) for Llama 3.1, Qwen2.5, Qwen3, Mistral
             (Nemo), SmolLM2 and Llama 2. The first four templates come from the sdist of llama-cpp-python on PyPI,
             which vendors llama.cpp's copies of them (models/templates/); SmolLM2's from the target, Llama 2's from
             data/fixtures/llama2-chat.
  engines/   layouts.json: the EAGLE-3 checkpoint layout vLLM and SGLang load, read from their PyPI packages' source
             (tools/engine_layouts.py).
A stamp (sha256 of this script and the target's files) makes re-runs free.

Usage: python tools/make_goldens.py --target .cache/models/SmolLM2-135M-Instruct [--out .cache/golden]
"""
import argparse
import glob
import hashlib
import json
import os
import random
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

import engine_layouts  # noqa: E402
from atomic_dir import build_dir  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GREEDY_TOKENS = 64
PROMPTS = [
    {"name": "plain", "text": "The history of the printing press begins in the fifteenth century, when"},
    {"name": "chat", "messages": [{"role": "user", "content": "What is the capital of France?"}]},
    {"name": "chat-multi-turn", "messages": [
        {"role": "system", "content": "You are a terse assistant. Answer in one sentence."},
        {"role": "user", "content": "Name a prime number larger than 10."},
        {"role": "assistant", "content": "11 is a prime number larger than 10."},
        {"role": "user", "content": "And one larger than 100?"}]},
]


def save_tensors(path, tensors):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)


@torch.no_grad()
def greedy(model, ids, n):
    """n greedy tokens with transformers' own KV cache; never stops at EOS."""
    out = model(torch.tensor([ids]), use_cache=True)
    past, new = out.past_key_values, []
    for _ in range(n):
        t = int(out.logits[0, -1].argmax())
        new.append(t)
        out = model(torch.tensor([[t]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
    return new


@torch.no_grad()
def smollm2(target, tmp):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    records, logits = [], {}
    for i, p in enumerate(PROMPTS):
        if "messages" in p:
            text = tok.apply_chat_template(p["messages"], tokenize=False, add_generation_prompt=True)
        else:
            text = p["text"]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        logits[f"logits.{i}"] = model(torch.tensor([ids])).logits[0].float()
        records.append(dict(p, rendered=text, ids=ids, greedy=greedy(model, ids, GREEDY_TOKENS)))
    save_tensors(os.path.join(tmp, "logits.safetensors"), logits)
    with open(os.path.join(tmp, "prompts.json"), "w") as f:
        json.dump({"greedy_tokens": GREEDY_TOKENS, "num_params": sum(p.numel() for p in model.parameters()),
                   "prompts": records}, f, indent=1, ensure_ascii=False)


@torch.no_grad()
def tiny(tmp):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                      rope_theta=500000.0)
    model = LlamaForCausalLM(cfg).eval()
    for p in model.parameters():  # larger weights than the default init, so the layers matter in the logits
        p.normal_(0, 0.2) if p.dim() == 2 else p.uniform_(0.5, 1.5)
    model.save_pretrained(os.path.join(tmp, "model"))
    tokens = torch.randint(0, cfg.vocab_size, (2, 24))
    lengths = [7, 12, 5]  # the packed row: three documents
    packed = torch.randint(0, cfg.vocab_size, (1, sum(lengths)))
    segments = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)]).unsqueeze(0)
    docs = torch.split(packed, lengths, dim=1)
    out = model(tokens, output_hidden_states=True)
    # hidden.<i>: output_hidden_states[i] for i < num_hidden_layers (the embeddings, then each layer's output; the
    # last entry is left out, as transformers versions differ on whether it is taken before or after the final norm).
    hidden = {f"hidden.{i}": out.hidden_states[i].float() for i in range(cfg.num_hidden_layers)}
    save_tensors(os.path.join(tmp, "golden.safetensors"), {
        **hidden, "tokens": tokens, "logits": out.logits.float(),
        "packed.tokens": packed, "packed.segments": segments,
        "packed.logits": torch.cat([model(d).logits.float() for d in docs], dim=1),
    })


# Tiny random models of every supported family, built with transformers' own config classes. Each differs from Llama
# where its family does: Qwen2's q/k/v biases (and, in qwen2-window, a sliding window on the layers from
# max_window_layers on), Qwen3's per-head q/k norms (and attention_bias), Mistral's sliding window on every layer.
# Windows of 6-8 tokens make the window matter within the 24-token rows.
FAMILY_COMMON = dict(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, bos_token_id=1,
                     eos_token_id=2, tie_word_embeddings=False)
FAMILIES = {
    "llama3": ("LlamaConfig", "LlamaForCausalLM", dict(
        head_dim=16, rope_theta=500000.0, attention_bias=True,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16})),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(rope_theta=1000000.0, tie_word_embeddings=True)),
    "qwen2-window": ("Qwen2Config", "Qwen2ForCausalLM", dict(use_sliding_window=True, sliding_window=6,
                                                             max_window_layers=1)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=16, attention_bias=True, rope_theta=1000000.0)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=8, head_dim=16)),
}
GREEDY_PROMPT = [5, 17, 33, 2, 71, 9]


@torch.no_grad()
def families(tmp):
    import transformers
    for name, (config_class, model_class, extra) in FAMILIES.items():
        torch.manual_seed(1)
        cfg = getattr(transformers, config_class)(**{**FAMILY_COMMON, **extra})
        model = getattr(transformers, model_class)(cfg).eval()
        for p in model.parameters():  # larger weights than the default init, so the layers matter in the logits
            p.normal_(0, 0.2) if p.dim() == 2 else p.uniform_(0.5, 1.5)
        out = os.path.join(tmp, name)
        model.save_pretrained(os.path.join(out, "model"))
        tokens = torch.randint(0, cfg.vocab_size, (2, 24))
        with torch.no_grad():
            logits = model(tokens).logits.float()
        save_tensors(os.path.join(out, "golden.safetensors"), {
            "tokens": tokens, "logits": logits, "greedy.prompt": torch.tensor(GREEDY_PROMPT),
            "greedy.tokens": torch.tensor(greedy(model, GREEDY_PROMPT, 24))})


def test_text():
    """A deterministic >= 100k-character text that exercises every branch of a byte-level BPE pre-tokenizer."""
    rng = random.Random(1234)
    parts = []
    for f in sorted(glob.glob("/usr/share/common-licenses/*"))[:6]:  # English prose (every Debian has these)
        if os.path.isfile(f):
            with open(f, encoding="utf-8", errors="replace") as fh:
                parts.append(fh.read()[:12000])
    for f in sorted(glob.glob(os.path.join(ROOT, "src", "*", "*.cpp")))[:8]:  # code
        with open(f, encoding="utf-8") as fh:
            parts.append(fh.read()[:6000])
    scripts = ["Der schnelle braune Fuchs springt über den faulen Hund.", "Ça coûte 12,50 € — déjà vu ?",
               "Быстрая коричневая лиса прыгает через ленивую собаку.", "Η γρήγορη καφέ αλεπού.",
               "敏捷的棕色狐狸跳过了懒狗。", "日本語のテキストとカタカナ、ひらがな。", "한국어 문장도 있습니다.",
               "مرحبا بالعالم، هذا نص عربي.", "שלום עולם", "नमस्ते दुनिया, यह हिंदी है।", "สวัสดีชาวโลก",
               "Tiếng Việt có dấu: người, được, những.", "İstanbul'da ağaç ve ışık.", "ᚠᚢᚦᚨᚱᚲ ᛟ"]
    emoji = ["😀", "🚀", "👩‍💻", "🇫🇷", "❤️", "👍🏽", "🧪", "∑∫√∞", "🎉🎉🎉", "©®™"]
    spaces = [" ", "  ", "\t", "\n", "\n\n", "\r\n", "   \n", "\u00a0", "\u2003", "\u200b", " \t \n"]
    words = "the of and to in is you that it he was for on are as with his they I at be this have from".split()
    specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    chunks = []
    for _ in range(2500):
        r = rng.random()
        if r < 0.30:
            chunks.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 8))))
        elif r < 0.50:
            chunks.append(rng.choice(scripts))
        elif r < 0.60:
            chunks.append("".join(rng.choice(emoji) for _ in range(rng.randint(1, 3))))
        elif r < 0.75:
            chunks.append(rng.choice([str(rng.randint(0, 10 ** rng.randint(1, 12))), f"{rng.uniform(-1e4, 1e4):.4f}",
                                      f"{rng.randint(1, 31)}/{rng.randint(1, 12)}/20{rng.randint(10, 99)}",
                                      f"0x{rng.getrandbits(32):08x}", f"{rng.randint(1, 999)}%"]))
        elif r < 0.78:
            chunks.append(rng.choice(specials))
        else:
            chunks.append(rng.choice(["don't", "I'll", "we've", "she's", "THEY'RE", "it'd", "x+=1;", "a->b", "::",
                                      "(){}[]", "#include <map>", "def f(x):\n    return x", "¿Qué?", "…", "—"]))
        chunks.append(rng.choice(spaces))
    parts.append("".join(chunks))
    text = "\n\n".join(parts)
    assert len(text) >= 100_000, len(text)
    return text


def tokenizer(target, tmp):
    from transformers import AutoTokenizer
    text = test_text()
    with open(os.path.join(tmp, "text.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(text)
    tok = AutoTokenizer.from_pretrained(target)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text, "HF decode(encode(text)) != text"
    with open(os.path.join(tmp, "smollm2_ids.json"), "w") as f:
        json.dump({"chars": len(text), "ids": ids}, f)
    for name, config in tokenizer_configs().items():
        tok, j = train_tokenizer(text, *config)
        os.makedirs(os.path.join(tmp, name))
        with open(os.path.join(tmp, name, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False)
        ids = tok.encode(text, add_special_tokens=False).ids
        with open(os.path.join(tmp, name, "ids.json"), "w") as f:
            json.dump({"ids": ids}, f)
        with open(os.path.join(tmp, name, "decoded.txt"), "w", encoding="utf-8", newline="") as f:
            f.write(tok.decode(ids, skip_special_tokens=False))


# The pre-tokenizer regexes of Llama 3 (tiktoken cl100k with digits in threes), Qwen2 (single digits) and GPT-4o
# (tiktoken o200k), as their tokenizer.json files carry them.
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
GPT4O_REGEX = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
               r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
               r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")


def tokenizer_configs():
    """name -> (model kwargs, normalizer, pre-tokenizer, decoder, special tokens, normalized added tokens)."""
    from tokenizers import Regex
    from tokenizers import decoders as D
    from tokenizers import normalizers as N
    from tokenizers import pre_tokenizers as P

    def split_then_bytes(regex):
        return P.Sequence([P.Split(Regex(regex), behavior="isolated"),
                           P.ByteLevel(add_prefix_space=False, use_regex=False)])

    mistral_decoder = D.Sequence([D.Replace("\u2581", " "), D.ByteFallback(), D.Fuse(), D.Strip(" ", 1, 0)])
    chat = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    sp = ["<unk>", "<s>", "</s>"]
    fallback = {"byte_fallback": True, "unk_token": "<unk>", "fuse_unk": True}
    return {
        "llama3": ({"ignore_merges": True}, None, split_then_bytes(LLAMA3_REGEX), D.ByteLevel(),
                   ["<|begin_of_text|>", "<|eot_id|>"], []),
        "qwen2-nfc": ({}, N.NFC(), split_then_bytes(QWEN2_REGEX), D.ByteLevel(), chat, []),
        "gpt4o-nfkc": ({}, N.NFKC(), split_then_bytes(GPT4O_REGEX), D.ByteLevel(), chat, []),
        "nfd-lowercase-strip-accents": (
            {}, N.Sequence([N.NFD(), N.Lowercase(), N.StripAccents(), N.Replace(Regex(r"\d+"), "#"), N.Strip()]),
            P.ByteLevel(add_prefix_space=True), D.ByteLevel(), chat, ["deja", "brown fox"]),
        # Mistral v0.3 / recent Llama 2 exports: Metaspace (first word only gets the space), one word per segment
        "metaspace-first": (fallback, None, P.Metaspace(replacement="\u2581", prepend_scheme="first", split=False),
                            mistral_decoder, sp + chat, []),
        # older Llama 2 / Mistral exports: the spaces are replaced by the normalizer, no pre-tokenizer
        "prepend-replace": (fallback, N.Sequence([N.Prepend("\u2581"), N.Replace(" ", "\u2581")]), None,
                            mistral_decoder, sp, []),
        # no byte fallback: characters outside the vocabulary become <unk>, a run of them one <unk>
        "metaspace-unk": ({"unk_token": "<unk>", "fuse_unk": True}, None, P.Metaspace(replacement="\u2581"),
                          D.Metaspace(replacement="\u2581"), sp, []),
        "metaspace-split-nfkd": ({**fallback, "fuse_unk": False}, N.NFKD(),
                                 P.Metaspace(replacement="\u2581", prepend_scheme="always", split=True),
                                 D.Metaspace(replacement="\u2581", prepend_scheme="always"), sp + chat, []),
    }


def train_tokenizer(text, model_kwargs, normalizer, pre_tokenizer, decoder, specials, added):
    from tokenizers import AddedToken, Tokenizer, models, trainers
    from tokenizers import pre_tokenizers as P
    byte_level = "unk_token" not in model_kwargs
    fallback_bytes = [f"<0x{b:02X}>" for b in range(256)] if model_kwargs.get("byte_fallback") else []
    tok = Tokenizer(models.BPE(**model_kwargs))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoder
    trainer = trainers.BpeTrainer(vocab_size=1500, show_progress=False, special_tokens=specials + fallback_bytes,
                                  initial_alphabet=P.ByteLevel.alphabet() if byte_level else [],
                                  limit_alphabet=1000 if byte_level else 120)
    tok.train_from_iterator(text.split("\n"), trainer)
    tok.add_tokens([AddedToken(a, normalized=True) for a in added])
    j = json.loads(tok.to_str())
    # byte-fallback tokens live in the model's vocabulary only, as in Llama 2's tokenizer.json
    j["added_tokens"] = [a for a in j["added_tokens"] if a["content"] not in fallback_bytes]
    return Tokenizer.from_str(json.dumps(j)), j


# Chat templates as their models ship them: (file in llama-cpp-python's sdist, special tokens of the model's
# tokenizer_config.json).
TEMPLATE_PACKAGE = "llama-cpp-python==0.3.36"
SHIPPED_TEMPLATES = {
    "llama3.1": ("meta-llama-Llama-3.1-8B-Instruct.jinja", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    "qwen2.5": ("Qwen-Qwen2.5-7B-Instruct.jinja", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "qwen3": ("Qwen-Qwen3-0.6B.jinja", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "mistral": ("mistralai-Mistral-Nemo-Instruct-2407.jinja",
                {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
}
CONVERSATIONS = [  # (messages, add_generation_prompt): with and without a system turn, one and several turns
    ([{"role": "user", "content": "What is the capital of France?"}], True),
    ([{"role": "system", "content": "You are a terse assistant."},
      {"role": "user", "content": "Name a prime number larger than 10."}], True),
    ([{"role": "user", "content": "Hi! Can you help me with \"quotes\", émojis 🚀 and\nnew lines?"},
      {"role": "assistant", "content": "  Of course: what do you need?  "},
      {"role": "user", "content": "Translate 'déjà vu' into English."}], True),
    ([{"role": "system", "content": "Answer in one sentence.\nBe polite."},
      {"role": "user", "content": "Why is the sky blue?"},
      {"role": "assistant", "content": "Because of Rayleigh scattering."},
      {"role": "user", "content": "And sunsets?"}], True),
    ([{"role": "system", "content": "You write haiku."},
      {"role": "user", "content": "Autumn"},
      {"role": "assistant", "content": "Leaves fall on the path\nthe wind counts them one by one\nnone of them stay long"}],
     False),
    ([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
      {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}], False),
]


def shipped_template(name, cache):
    """The text of one template file from llama-cpp-python's sdist (downloaded once into cache)."""
    import subprocess
    import tarfile
    sdists = glob.glob(os.path.join(cache, "llama_cpp_python-*.tar.gz"))
    if not sdists:
        print(f"[goldens] downloading the sdist of {TEMPLATE_PACKAGE} from PyPI (~77 MB) for its chat templates",
              flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "--disable-pip-version-check", "-d", cache, TEMPLATE_PACKAGE], check=True)
        sdists = glob.glob(os.path.join(cache, "llama_cpp_python-*.tar.gz"))
    with tarfile.open(sdists[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("models/templates/" + name))
        return tar.extractfile(member).read().decode("utf-8")


def chat(target, tmp, cache):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    configs = {family: {"chat_template": shipped_template(file, cache), **specials}
               for family, (file, specials) in SHIPPED_TEMPLATES.items()}
    for family, path in [("smollm2", os.path.join(target, "tokenizer_config.json")),
                         ("llama2", os.path.join(ROOT, "data/fixtures/llama2-chat/tokenizer_config.json"))]:
        with open(path, encoding="utf-8") as f:
            j = json.load(f)
        configs[family] = {k: v for k, v in j.items() if k == "chat_template" or k.endswith("_token")}
        jinja = os.path.join(os.path.dirname(path), "chat_template.jinja")  # transformers 5 saves it beside
        if os.path.isfile(jinja):
            with open(jinja, encoding="utf-8") as f:
                configs[family]["chat_template"] = f.read()
    for family, config in configs.items():
        specials = {k: v["content"] if isinstance(v, dict) else v for k, v in config.items()
                    if k != "chat_template" and v is not None}
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()), **specials)
        tok.chat_template = config["chat_template"]
        rendered = [{"messages": m, "add_generation_prompt": agp,
                     "text": tok.apply_chat_template(m, tokenize=False, add_generation_prompt=agp)}
                    for m, agp in CONVERSATIONS]
        os.makedirs(os.path.join(tmp, family))
        with open(os.path.join(tmp, family, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)
        with open(os.path.join(tmp, family, "golden.json"), "w", encoding="utf-8") as f:
            json.dump({"conversations": rendered}, f, ensure_ascii=False, indent=1)


def stamp_of(target):
    h = hashlib.sha256()
    for script in (os.path.abspath(__file__), engine_layouts.__file__):
        with open(script, "rb") as f:
            h.update(f.read())
    for name in sorted(os.listdir(target)):
        st = os.stat(os.path.join(target, name))
        h.update(f"{name}:{st.st_size}:{int(st.st_mtime)}".encode())
    for f in sorted(glob.glob(os.path.join(ROOT, "src", "*", "*.cpp")))[:8]:  # part of the test text
        with open(f, "rb") as fh:
            h.update(fh.read()[:6000])
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default=os.path.join(ROOT, ".cache/models/SmolLM2-135M-Instruct"))
    ap.add_argument("--out", default=os.path.join(ROOT, ".cache/golden"))
    ap.add_argument("--cache", default=os.path.join(ROOT, ".cache/downloads"), help="where PyPI downloads are kept")
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(args.target, "config.json")):
        sys.exit(f"[goldens] error: {args.target} is not a prepared target; run tools/prepare_target.py first")
    stamp_file = os.path.join(args.out, "stamp")
    stamp = stamp_of(args.target)
    if os.path.isfile(stamp_file) and open(stamp_file).read() == stamp:
        print(f"[goldens] {args.out} is up to date")
        return
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    print(f"[goldens] computing golden values with transformers into {args.out}", flush=True)
    build_dir(os.path.join(args.out, "tiny"), tiny)
    build_dir(os.path.join(args.out, "families"), families)
    build_dir(os.path.join(args.out, "tokenizer"), lambda tmp: tokenizer(args.target, tmp))
    build_dir(os.path.join(args.out, "smollm2"), lambda tmp: smollm2(args.target, tmp))
    build_dir(os.path.join(args.out, "chat"), lambda tmp: chat(args.target, tmp, args.cache))
    build_dir(os.path.join(args.out, "engines"), lambda tmp: engine_layouts.write(args.cache, tmp))
    with open(stamp_file, "w") as f:
        f.write(stamp)


if __name__ == "__main__":
    main()
