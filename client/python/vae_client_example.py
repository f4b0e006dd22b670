#!/usr/bin/python3
"""Calling vae-server from Python: Encode images, then Sample new ones, all with one pinned model version.

Needs only the Debian packages python3-grpcio, python3-protobuf and protobuf-compiler-grpc. Generate the stubs of
the API once (the build does this into build/client/python):

    mkdir -p gen && protoc -I proto --python_out=gen --grpc_out=gen \
        --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin proto/vae/v1/vae_service.proto

and run:

    PYTHONPATH=gen /usr/bin/python3 client/python/vae_client_example.py --server=127.0.0.1:50051 [IMAGE.png ...]

The example asks GetModelInfo which version the default model's default label names, then pins that version
(ModelSpec(name=..., version=N)) on every request: the server may publish new versions (a Train) or move labels
meanwhile, and codes computed by different versions live in different latent spaces. Store the model name and version
with any latent code you keep.

A server started with --auth_token_file wants the token on every call: set VAE_TOKEN (it is sent as the metadata
"authorization: Bearer <token>"; without TLS it crosses the network readable).
"""
import argparse
import array
import os
import sys

import grpc

from vae.v1 import vae_service_pb2 as pb
from vae.v1 import vae_service_pb2_grpc as pb_grpc


def to_rows(tensor):
    """A float32 vae.v1.Tensor of shape [N, J] as N lists of J floats (the bytes are little-endian)."""
    values = array.array("f", tensor.data)
    if sys.byteorder != "little":
        values.byteswap()
    n, j = tensor.shape
    return [values[i * j:(i + 1) * j].tolist() for i in range(n)]


def auth_metadata(token):
    """The call metadata that carries `token` to a server started with --auth_token_file; () without a token."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def pinned_spec(info):
    """The ModelSpec that pins the version a GetModelInfo answer describes (None from a server before model
    versions, which names no version: its requests cannot be pinned)."""
    if info.version.version <= 0:
        return None
    return pb.ModelSpec(name=info.version.model, version=info.version.version)


def version_name(version):
    """'mnist version 3', as vae-client names a vae.v1.ModelVersion."""
    number = version.version or version.generation
    return f"{version.model} version {number}" if version.model else f"version {number}"


def encode(stub, pixels, shape, timeout=30.0, metadata=(), spec=None):
    """uint8 pixels (bytes, row-major [N, C, H, W]) -> (mu, sigma, version): mu and sigma N rows of J floats each,
    version the vae.v1.ModelVersion that computed them. `spec` (a vae.v1.ModelSpec) chooses the model version."""
    images = pb.ImageBatch(tensor=pb.Tensor(shape=shape, dtype=pb.DATA_TYPE_UINT8, data=bytes(pixels)))
    response = stub.Encode(pb.EncodeRequest(images=images, model_spec=spec), timeout=timeout, metadata=metadata)
    return to_rows(response.mu), to_rows(response.sigma), response.version


def encode_files(stub, files, timeout=30.0, metadata=(), spec=None):
    """PNG/JPEG file contents -> (mu, sigma, version); the server decodes them and resizes them to the model's
    input."""
    images = pb.ImageBatch(encoded=files, resize=True)
    response = stub.Encode(pb.EncodeRequest(images=images, model_spec=spec), timeout=timeout, metadata=metadata)
    return to_rows(response.mu), to_rows(response.sigma), response.version


def sample(stub, count, seed, timeout=30.0, metadata=(), spec=None):
    """Draws `count` images with `seed` -> (list of PNG bytes, codes z as rows). The same seed gives the same PNGs
    from the same model version."""
    request = pb.SampleRequest(count=count, seed=seed, format=pb.IMAGE_FORMAT_PNG, model_spec=spec)
    response = stub.Sample(request, timeout=timeout, metadata=metadata)
    return list(response.png), to_rows(response.z)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051", help="vae-server address HOST:PORT")
    parser.add_argument("--samples", default="", help="write the samples as PREFIX0.png, PREFIX1.png, ...")
    parser.add_argument("images", nargs="*", help="PNG/JPEG files to encode (default: two synthetic images)")
    args = parser.parse_args(argv)
    metadata = auth_metadata(os.environ.get("VAE_TOKEN", ""))

    with grpc.insecure_channel(args.server) as channel:
        stub = pb_grpc.VaeServiceStub(channel)
        try:
            # Which version the default model's default label names now; every request below is pinned to it.
            info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10.0, metadata=metadata)
            spec = pinned_spec(info)
            c, h, w = info.input_shape
            print(f"model {version_name(info.version)} (preset {info.preset}): input {c}x{h}x{w}, "
                  f"latent dim {info.latent_dim}")

            if args.images:
                files = [open(path, "rb").read() for path in args.images]
                mu, sigma, version = encode_files(stub, files, metadata=metadata, spec=spec)
            else:
                # A black image and one with a white square in the middle, as a uint8 tensor [2, C, H, W].
                square = bytes(255 if h // 4 <= y < 3 * h // 4 and w // 4 <= x < 3 * w // 4 else 0
                               for _ in range(c) for y in range(h) for x in range(w))
                mu, sigma, version = encode(stub, bytes(c * h * w) + square, [2, c, h, w], metadata=metadata,
                                            spec=spec)
            # Keep (model, version) with the codes: they are only comparable with codes of the same version.
            for i, (m, s) in enumerate(zip(mu, sigma)):
                print(f"image {i}: mu[:4] = {[round(v, 4) for v in m[:4]]}, sigma[:4] = {[round(v, 4) for v in s[:4]]}"
                      f" ({version_name(version)})")

            pngs, z = sample(stub, count=4, seed=1, metadata=metadata, spec=spec)
            print(f"sampled {len(pngs)} PNGs ({', '.join(str(len(p)) for p in pngs)} bytes) from codes of "
                  f"{len(z[0])} dimensions")
            for i, png in enumerate(pngs if args.samples else []):
                with open(f"{args.samples}{i}.png", "wb") as f:
                    f.write(png)
        except grpc.RpcError as e:
            print(f"vae-server at {args.server}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
