#!/usr/bin/env python3
"""Write the JSON header of a .safetensors file (tensor names, dtypes, shapes; no data) as a test fixture.

The fixture under data/fixtures/smollm2-135m-instruct/ came from the checkpoint tools/prepare_target.py writes with
transformers, so the tensor names and shapes our Llama layout expects are checked against transformers' own:
  python tools/extract_safetensors_header.py .cache/models/SmolLM2-135M-Instruct/model.safetensors \
      data/fixtures/smollm2-135m-instruct/model.safetensors.header.json
"""
import json
import struct
import sys

src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
header.pop("__metadata__", None)
out = {name: {"dtype": v["dtype"], "shape": v["shape"]} for name, v in sorted(header.items())}
with open(dst, "w") as f:
    json.dump(out, f, indent=0, sort_keys=True)
    f.write("\n")
print(f"{len(out)} tensors -> {dst}")
