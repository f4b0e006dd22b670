#!/usr/bin/env python3
"""A tuned Python reference implementation of vae.v1's inference RPCs, for bench/vs-python.sh (BENCHMARKS.md §8).

grpcio + PyTorch 1.13 (Debian's python3-grpcio, python3-torch), the same model and weights as vae-server:
Encode, Decode, Sample, Reconstruct and GetModelInfo of an MLP VAE with a Bernoulli likelihood (the `mnist`
preset and its kind), weights read from a vae-service checkpoint (`ckpt-N.vae`: "VAECKPT1" | torch archive |
length | CRC | "VEND"; the archive loads with torch.jit.load) or, without one, a fresh model of the preset's sizes.

Tuned as issue #15 describes the fastest of the configurations tried: `--processes` (2) processes serving one
SO_REUSEPORT port, each pinned to its own core, each a grpc.server with `--workers` (16) threads and 1 torch thread,
inference under torch.inference_mode(), tensors in and out as raw bytes (numpy frombuffer / tobytes, no copies that
can be avoided), PNGs written directly (zlib level 1, unfiltered rows: the setting vae-server uses).

  python3 server.py --port=50061 [--checkpoint=models/ckpt-000000000001.vae] [--gen=DIR]
Prints "python server listening on 127.0.0.1:PORT" once every process serves; SIGTERM stops them all.
"""
import argparse
import io
import json
import os
import signal
import struct
import sys
import time
import zlib
from concurrent import futures

import numpy as np
import torch


def load_stubs(gen_dir):
    sys.path.insert(0, gen_dir)
    from vae.v1 import vae_service_pb2 as pb, vae_service_pb2_grpc as pb_grpc  # noqa: E402
    return pb, pb_grpc


def mnist_options():
    return {"preset": "mnist", "channels": 1, "height": 28, "width": 28, "latent_dim": 20, "hidden": [400],
            "activation": "relu", "architecture": "mlp", "likelihood": "bernoulli"}


def build_model(options, state=None):
    act = torch.nn.ReLU if options["activation"] == "relu" else torch.nn.Tanh
    d = options["channels"] * options["height"] * options["width"]
    j = options["latent_dim"]
    enc, dec, width = [], [], d
    for h in options["hidden"]:
        enc += [torch.nn.Linear(width, h), act()]
        width = h
    enc.append(torch.nn.Linear(width, 2 * j))
    width = j
    for h in reversed(options["hidden"]):
        dec += [torch.nn.Linear(width, h), act()]
        width = h
    dec.append(torch.nn.Linear(width, d))
    model = torch.nn.Module()
    model.encoder, model.decoder = torch.nn.Sequential(*enc), torch.nn.Sequential(*dec)
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


def load_checkpoint(path):
    raw = open(path, "rb").read()
    if raw[:8] != b"VAECKPT1" or raw[-4:] != b"VEND":
        raise SystemExit(f"{path}: not a vae-service checkpoint")
    (length,) = struct.unpack("<Q", raw[-16:-8])
    archive = torch.jit.load(io.BytesIO(raw[8:8 + length]))
    options = json.loads(archive.options_json)
    state = {k[len("model."):]: v.detach().clone() for k, v in archive.named_parameters() if k.startswith("model.")}
    return options, state


def png(pixels):
    """One 8-bit PNG of an [H, W] (gray) or [H, W, 3] (RGB) uint8 array: rows unfiltered, zlib level 1."""
    h, w = pixels.shape[:2]
    color = 0 if pixels.ndim == 2 else 2
    rows = np.zeros((h, 1 + pixels[0].size), np.uint8)
    rows[:, 1:] = pixels.reshape(h, -1)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)) + chunk(b"IEND", b""))


class Service:
    def __init__(self, pb, options, model, checkpoint):
        self.pb, self.options, self.model, self.checkpoint = pb, options, model, checkpoint
        self.shape = (options["channels"], options["height"], options["width"])
        self.j = options["latent_dim"]
        self.params = sum(p.numel() for p in model.parameters())

    # --- tensors <-> protos
    def tensor(self, array):
        t = self.pb.Tensor(dtype=self.pb.DATA_TYPE_FLOAT32, data=np.ascontiguousarray(array, np.float32).tobytes())
        t.shape.extend(array.shape)
        return t

    def images_in(self, batch, context):
        t = batch.tensor
        if batch.encoded or len(t.shape) != 4 or tuple(t.shape[1:]) != self.shape:
            context.abort(3, f"images.tensor: expected [N, {self.shape}] float32 or uint8")
        if t.dtype == self.pb.DATA_TYPE_UINT8:
            x = torch.from_numpy(np.frombuffer(t.data, np.uint8).astype(np.float32) / 255.0)
        else:
            x = torch.from_numpy(np.frombuffer(t.data, np.float32).copy())
        return x.view(t.shape[0], -1)

    def answer_images(self, response, images, fmt):
        if fmt in (0, 1, 3):
            response.images.CopyFrom(self.tensor(images.reshape(-1, *self.shape)))
        if fmt in (2, 3):
            pixels = np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8).reshape(-1, *self.shape)
            pixels = pixels[:, 0] if self.shape[0] == 1 else pixels.transpose(0, 2, 3, 1)
            response.png.extend(png(p) for p in pixels)

    def version(self):
        return self.pb.ModelVersion(generation=1, version=1, model="default")

    # --- the model
    def encode(self, x):
        mu, logvar = self.model.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def mean_image(self, z):
        return torch.sigmoid(self.model.decoder(z))

    # --- RPCs
    def Encode(self, request, context):
        with torch.inference_mode():
            mu, logvar = self.encode(self.images_in(request.images, context))
            sigma = torch.exp(0.5 * logvar)
        return self.pb.EncodeResponse(mu=self.tensor(mu.numpy()), sigma=self.tensor(sigma.numpy()),
                                      version=self.version())

    def Decode(self, request, context):
        z = request.z
        if len(z.shape) != 2 or z.shape[1] != self.j:
            context.abort(3, f"z: expected [N, {self.j}] float32")
        with torch.inference_mode():
            images = self.mean_image(torch.from_numpy(np.frombuffer(z.data, np.float32).copy()).view(-1, self.j))
        response = self.pb.DecodeResponse(version=self.version())
        self.answer_images(response, images.numpy(), request.format)
        return response

    def Sample(self, request, context):
        if request.count < 1 or request.count > 1024:
            context.abort(3, "count: expected 1..1024")
        seed = request.seed if request.HasField("seed") else int.from_bytes(os.urandom(8), "little") >> 1
        t = request.temperature or 1.0
        with torch.inference_mode():
            g = torch.Generator().manual_seed(seed & ((1 << 63) - 1))
            z = torch.randn(request.count, self.j, generator=g) * t
            images = self.mean_image(z)
        response = self.pb.SampleResponse(z=self.tensor(z.numpy()), seed=seed, version=self.version())
        self.answer_images(response, images.numpy(), request.format)
        return response

    def Reconstruct(self, request, context):
        with torch.inference_mode():
            x = self.images_in(request.images, context)
            mu, logvar = self.encode(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if request.sample_z else mu
            logits = self.model.decoder(z)
            recon = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
            kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(1)
            images = torch.sigmoid(logits)
        response = self.pb.ReconstructResponse(version=self.version())
        response.recon_nll.extend(recon.tolist())
        response.kl.extend(kl.tolist())
        self.answer_images(response, images.numpy(), request.format)
        return response

    def GetModelInfo(self, request, context):
        o = self.options
        info = self.pb.ModelInfo(preset=o.get("preset", ""), options_json=json.dumps(o), latent_dim=self.j,
                                 likelihood=o["likelihood"], architecture=o["architecture"],
                                 parameter_count=self.params, version=self.version(), device="cpu",
                                 checkpoint_path=self.checkpoint, max_batch=1024)
        info.input_shape.extend(self.shape)
        return info


def serve_one(args, cpu):
    import grpc
    os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)
    pb, pb_grpc = load_stubs(args.gen)
    if args.checkpoint:
        options, state = load_checkpoint(args.checkpoint)
    else:
        torch.manual_seed(1)
        options, state = mnist_options(), None
    if options["architecture"] != "mlp" or options["likelihood"] != "bernoulli":
        raise SystemExit("the Python reference serves MLP models with a Bernoulli likelihood")
    # The generated base class answers the methods not served here (Train, the repository RPCs) UNIMPLEMENTED.
    servicer = type("Servicer", (Service, pb_grpc.VaeServiceServicer), {})
    service = servicer(pb, options, build_model(options, state), args.checkpoint)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=[("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", 64 << 20),
                                  ("grpc.max_send_message_length", 64 << 20)])
    pb_grpc.add_VaeServiceServicer_to_server(service, server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--checkpoint", default="")
    p.add_argument("--gen", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"),
                   help="folder of the generated vae/v1 Python stubs (see bench/vs-python.sh)")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--workers", type=int, default=16)
    args = p.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    children = []
    for i in range(args.processes):
        pid = os.fork()
        if pid == 0:
            serve_one(args, cpus[i % len(cpus)])
            os._exit(0)
        children.append(pid)

    def stop(*_):
        for c in children:
            os.kill(c, signal.SIGTERM)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    import grpc
    pb, pb_grpc = load_stubs(args.gen)
    stub = pb_grpc.VaeServiceStub(grpc.insecure_channel(f"127.0.0.1:{args.port}"))
    for _ in range(600):
        try:
            stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=1)
            break
        except grpc.RpcError:
            if any(os.waitpid(c, os.WNOHANG)[0] for c in children):
                stop()
                raise SystemExit("python server: a serving process exited")
            time.sleep(0.1)
    print(f"python server listening on 127.0.0.1:{args.port}", flush=True)
    for c in children:
        os.waitpid(c, 0)


if __name__ == "__main__":
    main()
