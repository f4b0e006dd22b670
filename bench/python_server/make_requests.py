#!/usr/bin/env python3
"""Writes the request bodies of bench/vs-python.sh: one gRPC message each (a 0 byte, the big-endian length, the
serialized vae.v1 request: what h2load -d sends as a POST body), for a model with input [C, H, W] and J latents.

  python3 make_requests.py --gen=GEN --out=DIR --shape=1,28,28 --latent_dim=20
Files: encode_b1, encode_b256 (float32 images, uniform in [0, 1), seeded), decode_b1 (z ~ N(0, I), tensor answer),
sample64_png (count 64, seed 1, PNG answer).
"""
import argparse
import os
import struct
import sys

import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gen", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--shape", default="1,28,28")
    p.add_argument("--latent_dim", type=int, default=20)
    args = p.parse_args()
    sys.path.insert(0, args.gen)
    from vae.v1 import vae_service_pb2 as pb

    shape = [int(s) for s in args.shape.split(",")]
    rng = np.random.default_rng(1)

    def tensor(array):
        return pb.Tensor(shape=list(array.shape), dtype=pb.DATA_TYPE_FLOAT32, data=array.astype(np.float32).tobytes())

    def write(name, message):
        body = message.SerializeToString()
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(b"\x00" + struct.pack(">I", len(body)) + body)

    for b in (1, 256):
        images = pb.ImageBatch(tensor=tensor(rng.random((b, *shape))))
        write(f"encode_b{b}", pb.EncodeRequest(images=images))
    write("decode_b1", pb.DecodeRequest(z=tensor(rng.standard_normal((1, args.latent_dim))),
                                        format=pb.IMAGE_FORMAT_TENSOR))
    write("sample64_png", pb.SampleRequest(count=64, seed=1, format=pb.IMAGE_FORMAT_PNG))


if __name__ == "__main__":
    main()
