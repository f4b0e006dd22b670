#!/usr/bin/python3
"""The HTTP port of a real vae-server: probes, token auth, /metrics and the request log (issue #14).

Run by CTest with Debian's /usr/bin/python3 and VAE_SERVER_BINARY, VAE_PYTHON_STUBS (the stubs of
proto/vae/v1/vae_service.proto). One server for the class (gRPC on a free port, HTTP on another free port), with a
bearer token and --log_format=json; the calls are real gRPC calls (grpcio) and real HTTP requests (urllib). /metrics
is parsed with Debian's python3-prometheus-client and checked with `promtool check metrics` (Debian's prometheus).
The draining test starts a server of its own, since it shuts it down.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.environ["VAE_PYTHON_STUBS"])
sys.dont_write_bytecode = True

import grpc  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from vae.v1 import vae_service_pb2 as pb  # noqa: E402
from vae.v1 import vae_service_pb2_grpc as pb_grpc  # noqa: E402

TOKEN = "http-test-token-9d41"
AUTH = [("authorization", "Bearer " + TOKEN)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp, *flags):
    """vae-server on free ports with `flags`; returns (process, grpc address, http base url, stderr path)."""
    http_port = free_port()
    token_file = os.path.join(tmp, "token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    log_path = os.path.join(tmp, "server-%d.log" % http_port)
    log = open(log_path, "w")
    server = subprocess.Popen(
        [os.environ["VAE_SERVER_BINARY"], "--host=127.0.0.1", "--port=0", "--http_port=%d" % http_port,
         "--threads=1", "--preset=mnist", "--model_dir=" + os.path.join(tmp, "model-%d" % http_port),
         "--data_dir=" + tmp, "--auth_token_file=" + token_file, *flags],
        stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    line = server.stdout.readline()  # "vae-server listening on HOST:PORT", once both ports serve
    if not line.startswith("vae-server listening on "):
        server.kill()
        with open(log_path) as f:
            raise RuntimeError(f"vae-server did not start: {line!r}\n{f.read()}")
    return server, line.split()[-1], "http://127.0.0.1:%d" % http_port, log_path


def http_get(url, headers=None):
    """(status, headers, body) of a GET; HTTP errors are answers too."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def images(n, value=0.5):
    """n float32 images [n, 1, 28, 28] filled with `value`."""
    import struct
    return pb.ImageBatch(tensor=pb.Tensor(shape=[n, 1, 28, 28], dtype=pb.DATA_TYPE_FLOAT32,
                                          data=struct.pack("<f", value) * (n * 28 * 28)))


def samples(text):
    """{(name, sorted label items): value} of every sample in a /metrics body."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(snapshot, name, **labels):
    return snapshot.get((name, tuple(sorted(labels.items()))), 0.0)


class HttpMetricsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.server, cls.address, cls.http, cls.log_path = start_server(cls.tmp.name, "--log_format=json")
        cls.channel = grpc.insecure_channel(cls.address)
        cls.stub = pb_grpc.VaeServiceStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.kill()
        cls.server.wait()
        cls.server.stdout.close()
        cls.tmp.cleanup()

    def scrape(self):
        status, headers, body = http_get(self.http + "/metrics")  # no token: /metrics is open
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers["Content-Type"])
        return body

    def test_probes_answer_without_a_token(self):
        self.assertEqual(http_get(self.http + "/healthz")[0], 200)
        status, _, body = http_get(self.http + "/readyz")
        self.assertEqual((status, body), (200, "ready\n"))

    def test_other_paths_need_the_token(self):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + TOKEN}):
            status, response_headers, body = http_get(self.http + "/v1/models", headers)
            self.assertEqual(status, 401, headers)
            self.assertEqual(response_headers["WWW-Authenticate"], "Bearer")
            self.assertEqual(json.loads(body)["error"]["code"], "UNAUTHENTICATED")
        # With the token the request gets past authentication (no route here yet: 404).
        status, _, _ = http_get(self.http + "/no-such-path", {"Authorization": "Bearer " + TOKEN})
        self.assertEqual(status, 404)

    def test_counters_move_by_exactly_the_calls_made(self):
        before = samples(self.scrape())
        for _ in range(3):
            self.stub.Encode(pb.EncodeRequest(images=images(1)), metadata=AUTH, timeout=30)
        for _ in range(2):  # wrong image shape: INVALID_ARGUMENT
            bad = pb.ImageBatch(tensor=pb.Tensor(shape=[1, 1, 5, 5], dtype=pb.DATA_TYPE_FLOAT32, data=bytes(100)))
            with self.assertRaises(grpc.RpcError) as e:
                self.stub.Encode(pb.EncodeRequest(images=bad), metadata=AUTH, timeout=30)
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(grpc.RpcError) as e:  # no token
            self.stub.Decode(pb.DecodeRequest(z=pb.Tensor(shape=[1, 1], dtype=pb.DATA_TYPE_FLOAT32, data=bytes(4))),
                             timeout=30)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.stub.Sample(pb.SampleRequest(count=4, seed=1), metadata=AUTH, timeout=30)
        text = self.scrape()
        after = samples(text)

        def delta(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)

        self.assertEqual(delta("vae_grpc_requests_total", method="Encode", code="OK"), 3)
        self.assertEqual(delta("vae_grpc_requests_total", method="Encode", code="INVALID_ARGUMENT"), 2)
        self.assertEqual(delta("vae_grpc_requests_total", method="Decode", code="UNAUTHENTICATED"), 1)
        self.assertEqual(delta("vae_grpc_requests_total", method="Sample", code="OK"), 1)
        # The latency histogram saw every Encode, and its +Inf bucket is its count.
        self.assertEqual(delta("vae_grpc_request_duration_seconds_count", method="Encode"), 5)
        self.assertEqual(value(after, "vae_grpc_request_duration_seconds_bucket", method="Encode", le="+Inf"),
                         value(after, "vae_grpc_request_duration_seconds_count", method="Encode"))
        self.assertGreater(delta("vae_grpc_request_duration_seconds_sum", method="Encode"), 0)
        # Served by the default model's version 0 (the fresh model a server without stored versions serves): the 4 OK
        # calls. (vae_model_loaded lists stored versions: see the training test.)
        self.assertEqual(delta("vae_model_requests_total", model="default", version="0"), 4)
        self.assertEqual(delta("vae_model_requests_total", model="default", version="1"), 0)
        self.assertEqual(value(after, "vae_grpc_requests_in_flight"), 0)
        # Dynamic batching (on by default) ran the 3 valid one-image Encodes, in 1 to 3 model calls of 3 rows in all.
        self.assertEqual(delta("vae_batch_requests_total"), 3)
        self.assertEqual(delta("vae_batch_size_sum"), 3)
        self.assertIn(delta("vae_batch_size_count"), (1, 2, 3))
        self.assertEqual(value(after, "vae_batch_queue_depth"), 0)
        self.assertEqual(delta("vae_batch_queue_refused_total"), 0)
        self.assertEqual(value(after, "vae_training_job_running"), 0)
        self.assertGreater(value(after, "process_resident_memory_bytes"), 10e6)
        self.assertGreater(value(after, "process_open_fds"), 3)
        self.assertGreater(value(after, "process_threads"), 1)
        build = [k for k in after if k[0] == "vae_build_info"]
        self.assertEqual(len(build), 1)
        labels = dict(build[0][1])
        self.assertEqual(labels["version"], "0.1.0")
        self.assertTrue(labels["torch_version"].startswith("1.13"), labels)
        self.assertTrue(labels["grpc_version"].startswith("1.51"), labels)
        # Prometheus' own linter and parser accept the exposition.
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_request_log_line_is_json_with_the_callers_request_id(self):
        response, call = self.stub.Encode.with_call(pb.EncodeRequest(images=images(2)),
                                                    metadata=AUTH + [("x-request-id", "rid-test-7")], timeout=30)
        self.assertEqual(dict(call.initial_metadata()).get("x-request-id"), "rid-test-7")
        # Without one the server makes one up, and still echoes it.
        _, call = self.stub.Encode.with_call(pb.EncodeRequest(images=images(1)), metadata=AUTH, timeout=30)
        generated = dict(call.initial_metadata()).get("x-request-id")
        self.assertRegex(generated, r"^[0-9a-f]{16}$")
        entries = {}
        for _ in range(100):  # the line is written as the call finishes, on the server's thread
            with open(self.log_path) as f:
                for line in f:
                    if line.startswith("{"):
                        entry = json.loads(line)  # every JSON line parses
                        entries[entry.get("request_id")] = entry
            if "rid-test-7" in entries and generated in entries:
                break
            time.sleep(0.05)
        entry = entries["rid-test-7"]
        self.assertEqual(entry["event"], "request")
        self.assertEqual(entry["method"], "Encode")
        self.assertEqual(entry["model"], "default")
        self.assertEqual(entry["version"], 0)  # the fresh model: no version is stored yet
        self.assertEqual(entry["images"], 2)
        self.assertEqual(entry["status"], "OK")
        self.assertGreater(entry["latency_ms"], 0)
        self.assertIn("127.0.0.1", entry["peer"])
        self.assertRegex(entry["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertEqual(entries[generated]["images"], 1)


class DefaultModelTest(unittest.TestCase):
    def test_a_failed_call_without_a_model_name_is_logged_under_the_configured_default_model(self):
        with tempfile.TemporaryDirectory() as tmp:
            server, address, _, log_path = start_server(tmp, "--log_format=json", "--default_model=digits")
            try:
                with grpc.insecure_channel(address) as channel:
                    stub = pb_grpc.VaeServiceStub(channel)
                    with self.assertRaises(grpc.RpcError) as failed:  # no images: refused before a model answers
                        stub.Encode(pb.EncodeRequest(), metadata=AUTH + [("x-request-id", "rid-default")], timeout=30)
                    self.assertEqual(failed.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                entry = None
                for _ in range(100):  # the line is written as the call finishes, on the server's thread
                    with open(log_path) as f:
                        lines = [json.loads(line) for line in f if line.startswith("{")]
                    entry = next((e for e in lines if e.get("request_id") == "rid-default"), None)
                    if entry is not None:
                        break
                    time.sleep(0.05)
                self.assertIsNotNone(entry)
                self.assertEqual(entry["model"], "digits")
                self.assertEqual(entry["status"], "INVALID_ARGUMENT")
            finally:
                server.kill()
                server.wait()


class TrainingMetricsTest(unittest.TestCase):
    def test_a_training_job_moves_the_training_series_and_logs_its_epoch(self):
        with tempfile.TemporaryDirectory() as tmp:
            server, address, http, log_path = start_server(tmp, "--log_format=json")
            try:
                with grpc.insecure_channel(address) as channel:
                    stub = pb_grpc.VaeServiceStub(channel)
                    # A dataset of 40 PNG digits the server itself draws: a folder under --data_dir (10% held out).
                    pngs = stub.Sample(pb.SampleRequest(count=40, seed=3, format=pb.IMAGE_FORMAT_PNG), metadata=AUTH,
                                       timeout=30).png
                    os.mkdir(os.path.join(tmp, "digits"))
                    for i, png in enumerate(pngs):
                        with open(os.path.join(tmp, "digits", "%02d.png" % i), "wb") as f:
                            f.write(png)
                    before = samples(http_get(http + "/metrics")[2])
                    events = list(stub.Train(pb.TrainRequest(dataset="digits", epochs=1, batch_size=8),
                                             metadata=AUTH, timeout=120))
                    self.assertEqual(events[-1].kind, pb.TrainProgress.DONE)
                after = samples(http_get(http + "/metrics")[2])

                def delta(name, **labels):
                    return value(after, name, **labels) - value(before, name, **labels)

                self.assertEqual(delta("vae_grpc_requests_total", method="Train", code="OK"), 1)
                self.assertEqual(delta("vae_training_checkpoints_written_total"), 1)  # one epoch, one checkpoint
                self.assertEqual(delta("vae_training_jobs_completed_total"), 1)
                self.assertEqual(delta("vae_training_jobs_failed_total"), 0)
                self.assertEqual(value(after, "vae_training_epoch"), 1)
                self.assertEqual(value(after, "vae_training_step"), 5)  # 36 training images / batches of 8
                self.assertEqual(value(after, "vae_training_job_running"), 0)
                self.assertGreater(value(after, "vae_training_loss", split="train"), 0)
                self.assertGreater(value(after, "vae_training_loss", split="test"), 0)
                self.assertGreater(value(after, "vae_training_images_per_second"), 0)
                # The epoch's weights are the model's first stored version, loaded and served now.
                self.assertEqual(value(after, "vae_model_loaded", model="default", version="1"), 1)
                self.assertGreater(value(after, "vae_model_parameters", model="default", version="1"), 0)
                self.assertNotIn(("vae_model_loaded", (("model", "default"), ("version", "2"))), after)
                with open(log_path) as f:
                    epochs = [json.loads(line) for line in f if line.startswith('{"') and '"train_epoch"' in line]
                self.assertEqual(len(epochs), 1)
                self.assertEqual((epochs[0]["epoch"], epochs[0]["epochs"], epochs[0]["step"]), (1, 1, 5))
                self.assertEqual(epochs[0]["dataset"], "digits")
                self.assertEqual(epochs[0]["version"], 1)
                self.assertGreater(epochs[0]["train_loss"], 0)
            finally:
                server.kill()
                server.wait()
                server.stdout.close()


class TlsTest(unittest.TestCase):
    def test_the_http_port_speaks_tls_with_the_grpc_certificate(self):
        import ssl
        with tempfile.TemporaryDirectory() as tmp:
            def openssl(*args):
                subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)
            openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                    "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.pem")
            openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-keyout", "server.key", "-out", "server.csr")
            with open(os.path.join(tmp, "san.cnf"), "w") as f:
                f.write("subjectAltName=IP:127.0.0.1\n")
            openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                    "-days", "2", "-extfile", "san.cnf", "-out", "server.pem")
            server, _, http, _ = start_server(tmp, "--tls_cert=" + os.path.join(tmp, "server.pem"),
                                              "--tls_key=" + os.path.join(tmp, "server.key"))
            try:
                https = http.replace("http://", "https://")
                context = ssl.create_default_context(cafile=os.path.join(tmp, "ca.pem"))
                with urllib.request.urlopen(https + "/readyz", context=context, timeout=10) as response:
                    self.assertEqual((response.status, response.read()), (200, b"ready\n"))
                request = urllib.request.Request(https + "/v1/models")
                with self.assertRaises(urllib.error.HTTPError) as e:  # the token applies over TLS too
                    urllib.request.urlopen(request, context=context, timeout=10)
                self.assertEqual(e.exception.code, 401)
                # Plaintext HTTP gets no answer from a TLS port.
                with self.assertRaises((urllib.error.URLError, ConnectionError, http_client_errors())):
                    urllib.request.urlopen(http + "/healthz", timeout=10).read()
            finally:
                server.kill()
                server.wait()
                server.stdout.close()


def http_client_errors():
    import http.client
    return http.client.HTTPException


class StartupErrorsTest(unittest.TestCase):
    def test_bad_http_and_log_flags_stop_the_server_with_one_line_naming_the_flag(self):
        for flags, words in ((["--log_format=xml"], "log_format"), (["--http_port=70000"], "http_port"),
                             (["--http_port=50999", "--port=50999"], "same as port"),
                             (["--http_port=8080", "--http_threads=0"], "http_threads")):
            with tempfile.TemporaryDirectory() as tmp:
                run = subprocess.run([os.environ["VAE_SERVER_BINARY"], "--model_dir=" + tmp, "--data_dir=" + tmp,
                                      *flags], capture_output=True, text=True, timeout=60)
                self.assertEqual(run.returncode, 1, flags)
                self.assertIn(words, run.stderr, flags)


class DrainingTest(unittest.TestCase):
    def test_readyz_is_503_while_draining_and_healthz_stays_200(self):
        with tempfile.TemporaryDirectory() as tmp:
            server, _, http, _ = start_server(tmp, "--metrics=false")
            try:
                self.assertEqual(http_get(http + "/readyz")[0], 200)
                self.assertEqual(http_get(http + "/metrics")[0], 404)  # --metrics=false
                server.send_signal(signal.SIGTERM)
                # The HTTP port closes last: after readiness went 503, gRPC drained (>= 100 ms) and stopped.
                seen = []
                for _ in range(20000):
                    try:
                        status, _, body = http_get(http + "/readyz")
                        seen.append((status, body))
                        if status == 503:
                            self.assertEqual(http_get(http + "/healthz")[0], 200)
                            seen.append(("v1", http_get(http + "/v1/models",
                                                        {"Authorization": "Bearer " + TOKEN})[0]))
                    except (urllib.error.URLError, ConnectionError):
                        break
                self.assertIn((503, "draining\n"), seen)
                # Once 503, never ready again; API routes are refused with 503 meanwhile.
                first = seen.index((503, "draining\n"))
                self.assertTrue(all(s[0] in (503, "v1") for s in seen[first:]), seen[first:])
                self.assertTrue(all(s[1] == 503 for s in seen[first:] if s[0] == "v1"), seen[first:])
                self.assertEqual(server.wait(timeout=30), 0)
            finally:
                if server.poll() is None:
                    server.kill()
                    server.wait()
                server.stdout.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
