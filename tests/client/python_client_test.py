#!/usr/bin/python3
"""The Python example client (client/python/vae_client_example.py) against a real vae-server.

Run by CTest with Debian's /usr/bin/python3 and these variables: VAE_SERVER_BINARY, VAE_CLIENT_BINARY, VAE_DATA_DIR,
VAE_PYTHON_STUBS (the stubs generated from proto/vae/v1/vae_service.proto) and VAE_PYTHON_EXAMPLE. One server for
the whole test class, on a free port (--port=0), killed at the end. The server requires a bearer token
(--auth_token_file), so every call here, the example's and vae-client's, carries it.
"""
import contextlib
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from unittest import mock

STUBS = os.environ["VAE_PYTHON_STUBS"]
sys.path.insert(0, STUBS)
sys.dont_write_bytecode = True  # no __pycache__ next to the example in the source tree

import grpc  # noqa: E402  (after the stubs' path)

from vae.v1 import vae_service_pb2 as pb  # noqa: E402
from vae.v1 import vae_service_pb2_grpc as pb_grpc  # noqa: E402


def load_example():
    spec = importlib.util.spec_from_file_location("vae_client_example", os.environ["VAE_PYTHON_EXAMPLE"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mnist_test_bytes(count):
    """The first `count` MNIST test digits as raw uint8 bytes [count, 1, 28, 28] (idx: 16-byte header)."""
    with open(os.path.join(os.environ["VAE_DATA_DIR"], "mnist", "t10k-images-idx3-ubyte"), "rb") as f:
        header = f.read(16)
        assert header[:4] == b"\x00\x00\x08\x03", header
        return f.read(count * 28 * 28)


TOKEN = "py-test-token-4f0c2a"


class PythonExampleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.log = open(os.path.join(cls.tmp.name, "server.log"), "w+")
        token_file = os.path.join(cls.tmp.name, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        cls.server = subprocess.Popen(
            [os.environ["VAE_SERVER_BINARY"], "--host=127.0.0.1", "--port=0", "--threads=2",
             "--model_dir=" + os.path.join(cls.tmp.name, "model"), "--data_dir=" + os.environ["VAE_DATA_DIR"],
             "--auth_token_file=" + token_file],
            stdout=subprocess.PIPE, stderr=cls.log, text=True)
        line = cls.server.stdout.readline()  # "vae-server listening on HOST:PORT", once it serves
        if not line.startswith("vae-server listening on "):
            cls.server.kill()
            cls.log.seek(0)
            raise RuntimeError(f"vae-server did not start: {line!r}\n{cls.log.read()}")
        cls.address = line.split()[-1]
        cls.channel = grpc.insecure_channel(cls.address)
        cls.stub = pb_grpc.VaeServiceStub(cls.channel)
        cls.example = load_example()
        cls.auth = cls.example.auth_metadata(TOKEN)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.kill()
        cls.server.wait()
        cls.log.close()
        cls.tmp.cleanup()

    def test_encode_matches_the_cpp_client(self):
        # The same four digits through the Python example and through vae-client: the same codes.
        mu, sigma, _ = self.example.encode(self.stub, mnist_test_bytes(4), [4, 1, 28, 28], metadata=self.auth)
        self.assertEqual(len(mu), 4)
        self.assertEqual([len(row) for row in mu], [20] * 4)
        self.assertTrue(all(s > 0 for row in sigma for s in row))
        out = os.path.join(self.tmp.name, "z.json")
        subprocess.run([os.environ["VAE_CLIENT_BINARY"], "encode", "--server=" + self.address, "--limit=4",
                        "--output=" + out,
                        os.path.join(os.environ["VAE_DATA_DIR"], "mnist", "t10k-images-idx3-ubyte")],
                       check=True, capture_output=True, env=dict(os.environ, VAE_TOKEN=TOKEN))
        with open(out) as f:
            cpp = json.load(f)
        for i in range(4):
            for k in range(20):
                self.assertAlmostEqual(mu[i][k], cpp["mu"][i][k], delta=1e-6)
                self.assertAlmostEqual(sigma[i][k], cpp["sigma"][i][k], delta=1e-6)

    def test_sample_is_repeatable_and_its_pngs_encode(self):
        pngs, z = self.example.sample(self.stub, count=3, seed=11, metadata=self.auth)
        again, z_again = self.example.sample(self.stub, count=3, seed=11, metadata=self.auth)
        other, _ = self.example.sample(self.stub, count=3, seed=12, metadata=self.auth)
        self.assertEqual(len(pngs), 3)
        self.assertTrue(all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs))
        self.assertEqual(pngs, again)
        self.assertEqual(z, z_again)
        self.assertNotEqual(pngs, other)
        self.assertEqual([len(row) for row in z], [20] * 3)
        # The sampled PNGs are valid model inputs: the server decodes them again.
        mu, _, _ = self.example.encode_files(self.stub, pngs, metadata=self.auth)
        self.assertEqual(len(mu), 3)

    def test_main_prints_codes_and_samples(self):
        prefix = os.path.join(self.tmp.name, "sample_")
        out = io.StringIO()
        with contextlib.redirect_stdout(out), mock.patch.dict(os.environ, {"VAE_TOKEN": TOKEN}):
            code = self.example.main(["--server=" + self.address, "--samples=" + prefix])
        self.assertEqual(code, 0)
        lines = out.getvalue().splitlines()
        info = self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10, metadata=self.auth)
        served = self.example.version_name(info.version)
        self.assertEqual(lines[0], f"model {served} (preset mnist): input 1x28x28, latent dim 20")
        self.assertRegex(lines[1], r"^image 0: mu\[:4\] = \[.*\], sigma\[:4\] = \[.*\] \(" + served + r"\)$")
        self.assertRegex(lines[3], r"^sampled 4 PNGs \(\d+, \d+, \d+, \d+ bytes\) from codes of 20 dimensions$")
        for i in range(4):
            with open(f"{prefix}{i}.png", "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_requests_are_pinned_to_the_version_getmodelinfo_names(self):
        info = self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10, metadata=self.auth)
        spec = self.example.pinned_spec(info)
        if info.version.version > 0:
            self.assertEqual((spec.name, spec.version, spec.label), (info.version.model, info.version.version, ""))
        else:
            self.assertIsNone(spec)  # a server before model versions: nothing to pin
        mu, sigma, version = self.example.encode(self.stub, mnist_test_bytes(2), [2, 1, 28, 28], metadata=self.auth,
                                                 spec=spec)
        self.assertEqual((version.model, version.version), (info.version.model, info.version.version))
        # The pinned version answers exactly what the unpinned default did for the same images.
        mu0, sigma0, _ = self.example.encode(self.stub, mnist_test_bytes(2), [2, 1, 28, 28], metadata=self.auth)
        self.assertEqual(mu, mu0)
        self.assertEqual(sigma, sigma0)

    def test_calls_without_the_token_are_unauthenticated(self):
        for metadata in [(), self.example.auth_metadata("not-" + TOKEN)]:
            with self.assertRaises(grpc.RpcError) as raised:
                self.example.sample(self.stub, count=1, seed=1, metadata=metadata)
            self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(raised.exception.details(), "Sample: wrong token")

    def test_script_without_vae_token_reports_unauthenticated_and_exits_1(self):
        env = dict(os.environ, PYTHONPATH=STUBS)
        env.pop("VAE_TOKEN", None)
        result = subprocess.run([sys.executable, os.environ["VAE_PYTHON_EXAMPLE"], "--server=" + self.address],
                                env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertTrue(result.stderr.startswith(
            f"vae-server at {self.address}: UNAUTHENTICATED: GetModelInfo: no authorization metadata"), result.stderr)

    def test_script_reports_an_unreachable_server_and_exits_1(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        result = subprocess.run([sys.executable, os.environ["VAE_PYTHON_EXAMPLE"], f"--server=127.0.0.1:{port}"],
                                env=dict(os.environ, PYTHONPATH=STUBS), capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertTrue(result.stderr.startswith(f"vae-server at 127.0.0.1:{port}: UNAVAILABLE: "), result.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
