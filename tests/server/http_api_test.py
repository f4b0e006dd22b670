#!/usr/bin/python3
"""The HTTP/JSON API (server/http_api.h) over real HTTP, with Python's urllib and raw sockets.

Run by CTest (server.http_api) with VAE_HTTP_TEST_SERVER: a ServerCore with the HTTP API on vae-server's
HttpServer (tests/server/http_test_server.cc), a fresh mnist model and the synthetic MNIST as its data_dir, on a free
127.0.0.1 port, with a 1 MiB body limit (its argument). One server for the whole class, stopped at the end. Every
endpoint, both image encodings, the error mapping, a training job seen through GET /v1/train, and clients that stall
mid-request. Then VaeServerHttpTest: the real vae-server (VAE_SERVER_BINARY) with --http_port and tokens: the API is
mounted on its HTTP port, and the tokens apply (read-only may infer, only the full token may train).
"""
import base64
import json
import math
import os
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

# A 28x28 grayscale JPEG (a stroke and a ring, written by OpenCV): the test's JPEG input.
DIGIT_JPEG = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/wAALCAAcABwBAREA/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/9oACAEBAAA/APzp+APwm/4Xr8ZfCfgH+39P8L/29ei0/tTU2xFDwWwoyN8rbdkceV3yOibl3ZH09+0t/wAEt/Hvwy+Ip074bLL498Mzwm5S7ubmys7izYyyAW0qvODIyxiJjKERXMhwq4IHx34q8F+IfAuoR2HiTQtT8PX0kQnS11WzktpWjJKhwrgEqSrDPTKn0rGr1P8AZc+GVh8Yvj74N8J6q+3S726eW7TDHzoYYnneLKsrL5ixFNwIK79wzjB/a3wBrHg/9rb4b/FnwroesapoHi/SNQvfDl7qX2oxXun3iH9zexLBOshhMiEqWZDKYpkb5dwr4b8baT4g+N3wO+Nfgf4wQQyfFX4QXFxeQ+IU07yVlhCPMhiA8osk8dvIoPlohje2k2uy5r8462fBfiq78C+MdC8SWEcM19o1/BqNvHcqWiaSKRZFDgEEqSoyAQcdxX6cfAr48/CbxH8Y7P45+HfH9j8OPHF1aQaf4t8N+J5Yza31oRteGN5THiT/AEeBkngchRFGZIcyOjd3/wAFFrt/E37F+q/EDSrjw5p+meMLrSLtjMhtrnV7eRYnhkgXhpLjbFbErLlhBDLkL5agfjnRRVqTVr6bSrfTJL24fTbaaW5gs2lYwxSyLGskipnCs6wxBmAyRGgOdoxVr//Z"

BODY_LIMIT = 1 << 20  # the server's --max_message_mb=1


class HttpApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = subprocess.Popen([os.environ["VAE_HTTP_TEST_SERVER"], "1"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        line = cls.server.stdout.readline()  # "listening on 127.0.0.1:PORT", once it serves
        if not line.startswith("listening on "):
            cls.server.kill()
            raise RuntimeError(f"vae-http-test-server did not start: {line!r}")
        cls.host, port = line.split()[-1].rsplit(":", 1)
        cls.port = int(port)
        cls.base = f"http://{cls.host}:{cls.port}"

    @classmethod
    def tearDownClass(cls):
        cls.server.stdin.close()  # its signal to stop
        try:
            cls.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cls.server.kill()
            cls.server.wait()

    # --- helpers -----------------------------------------------------------------------------------------------------

    def call(self, method, path, body=None, content_type="application/json", raw=None):
        """(HTTP status, parsed JSON body) of one request."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None and content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            payload = e.read()
            self.assertEqual(e.headers.get("Content-Type"), "application/json", payload)
            return e.code, json.loads(payload)

    def ok(self, method, path, body=None):
        status, answer = self.call(method, path, body)
        self.assertEqual(status, 200, answer)
        return answer

    def error(self, expected_status, expected_code, method, path, body=None, **kwargs):
        """Asserts an error answer and returns its message."""
        status, answer = self.call(method, path, body, **kwargs)
        self.assertEqual(status, expected_status, answer)
        self.assertEqual(answer["error"]["code"], expected_code, answer)
        return answer["error"]["message"]

    def sample(self, count, seed, fmt="png", path="/v1/models/default"):
        return self.ok("POST", path + ":sample", {"count": count, "seed": seed, "format": fmt})

    def served_version(self):
        # The default model's default label; 0 for the fresh model a server without versions serves (never stored).
        return self.ok("GET", "/v1/models/default")["model"]["version"]

    # --- models ------------------------------------------------------------------------------------------------------

    def test_list_models_names_the_default_model_its_version_and_label(self):
        # ListModels' answer in proto3 JSON (int64 as strings): the default model, its stored versions, "latest" on
        # the newest of them (none while the fresh model is served as version 0).
        listing = self.ok("GET", "/v1/models")
        self.assertEqual(listing["default_model"], "default")
        models = listing["models"]
        self.assertEqual(len(models), 1)
        self.assertEqual(models[0]["name"], "default")
        self.assertEqual(models[0]["default_label"], "latest")
        versions = [int(v["version"]) for v in models[0]["versions"]]
        self.assertEqual(versions, sorted(versions))
        if versions:
            self.assertEqual(models[0]["labels"]["latest"], str(versions[-1]))
            self.assertEqual(self.served_version(), versions[-1])
        else:
            self.assertNotIn("latest", models[0]["labels"])
            self.assertEqual(self.served_version(), 0)

    def test_model_info_by_name_version_and_label(self):
        version = self.served_version()
        paths = ["/v1/models/default", "/v1/models/default/labels/latest"]
        if version >= 1:  # a stored version can be pinned; the fresh model's version 0 cannot
            paths.append(f"/v1/models/default/versions/{version}")
        else:
            self.error(400, "INVALID_ARGUMENT", "GET", "/v1/models/default/versions/0")
        for path in paths:
            answer = self.ok("GET", path)
            self.assertEqual(answer["info"]["input_shape"], ["1", "28", "28"], path)  # proto3 JSON: int64 as strings
            self.assertEqual(answer["info"]["latent_dim"], "20")
            self.assertEqual(answer["info"]["likelihood"], "bernoulli")
            self.assertEqual(answer["model"]["name"], "default")
            self.assertEqual(answer["model_version_status"][0]["state"], "AVAILABLE")

    def test_unknown_model_version_and_label_are_404_naming_what_exists(self):
        message = self.error(404, "NOT_FOUND", "GET", "/v1/models/mnist")
        self.assertIn("'mnist' not found", message)
        self.assertIn("models: default", message)
        message = self.error(404, "NOT_FOUND", "POST", "/v1/models/mnist:sample", {"count": 1})
        self.assertIn("'mnist' not found", message)
        message = self.error(404, "NOT_FOUND", "POST", "/v1/models/default/versions/999:sample", {"count": 1})
        self.assertIn("no version 999", message)
        message = self.error(404, "NOT_FOUND", "GET", "/v1/models/default/labels/stable")
        self.assertIn("no label 'stable'", message)

    # --- inference ---------------------------------------------------------------------------------------------------

    def test_sample_is_repeatable_per_seed_and_returns_z_and_the_seed(self):
        a = self.sample(3, 7)
        b = self.sample(3, 7)
        c = self.sample(3, 8)
        self.assertEqual(a["seed"], "7")  # a string: JavaScript numbers hold 53 bits, seeds 64
        self.assertEqual(len(a["png"]), 3)
        self.assertTrue(base64.b64decode(a["png"][0]["b64"]).startswith(b"\x89PNG\r\n\x1a\n"))
        self.assertEqual(a["png"], b["png"])
        self.assertNotEqual(a["png"], c["png"])
        self.assertEqual([len(a["z"]), len(a["z"][0])], [3, 20])
        self.assertEqual(a["model"]["name"], "default")
        self.assertNotIn("images", a)  # format png: no tensor
        # A seed as a decimal string (all 64 bits) works too; temperature scales z.
        big = self.ok("POST", "/v1/models/default:sample",
                      {"count": 1, "seed": "18446744073709551615", "temperature": 0.5})
        self.assertEqual(big["seed"], "18446744073709551615")
        self.assertEqual(len(big["images"][0][0]), 28)  # format absent: the tensor, [N][C][H][W]

    def test_sample_z_decodes_to_the_same_images(self):
        sampled = self.ok("POST", "/v1/models/default:sample", {"count": 2, "seed": 3, "format": "tensor_and_png"})
        decoded = self.ok("POST", "/v1/models/default:decode", {"z": sampled["z"], "format": "TENSOR_AND_PNG"})
        self.assertEqual(decoded["png"], sampled["png"])
        for a, b in zip(flatten(decoded["images"]), flatten(sampled["images"])):
            self.assertAlmostEqual(a, b, places=5)

    def test_encode_png_and_nested_arrays_agree(self):
        # The sample's PNGs and their pixels as nested arrays (value / 255, what the PNG holds) are the same images.
        sampled = self.ok("POST", "/v1/models/default:sample", {"count": 2, "seed": 11, "format": "tensor_and_png"})
        pixels = [[[[round(v * 255) / 255 for v in row] for row in image[0]]] for image in sampled["images"]]
        by_png = self.ok("POST", "/v1/models/default:encode", {"images": sampled["png"]})
        by_array = self.ok("POST", "/v1/models/default:encode", {"images": pixels})
        by_array_hw = self.ok("POST", "/v1/models/default:encode", {"images": [p[0] for p in pixels]})  # [N][H][W]
        self.assertEqual([len(by_png["mu"]), len(by_png["mu"][0])], [2, 20])
        for other in (by_array, by_array_hw):
            for a, b in zip(flatten(by_png["mu"]) + flatten(by_png["sigma"]), flatten(other["mu"]) + flatten(other["sigma"])):
                self.assertAlmostEqual(a, b, places=5)
        self.assertTrue(all(s > 0 for s in flatten(by_png["sigma"])))

    def test_encode_a_jpeg_and_a_data_url(self):
        jpeg = self.ok("POST", "/v1/models/default:encode", {"images": [{"b64": DIGIT_JPEG}]})
        url = self.ok("POST", "/v1/models/default:encode",
                      {"images": [{"b64": "data:image/jpeg;base64," + DIGIT_JPEG}]})
        self.assertEqual(jpeg["mu"], url["mu"])
        self.assertEqual(len(jpeg["mu"][0]), 20)

    def test_reconstruct_scores_each_image(self):
        answer = self.ok("POST", "/v1/models/default:reconstruct",
                         {"images": [{"b64": DIGIT_JPEG}, {"b64": DIGIT_JPEG}], "format": "png"})
        self.assertEqual(len(answer["png"]), 2)
        self.assertEqual(len(answer["recon_nll"]), 2)
        self.assertEqual(len(answer["kl"]), 2)
        # Bernoulli NLL of 784 pixels and a KL: finite, > 0; the same image gives the same numbers (z = mu).
        self.assertTrue(all(math.isfinite(v) and v > 0 for v in answer["recon_nll"] + answer["kl"]), answer)
        self.assertEqual(answer["recon_nll"][0], answer["recon_nll"][1])
        sampled = self.ok("POST", "/v1/models/default:reconstruct",
                          {"images": [{"b64": DIGIT_JPEG}], "sample_z": True, "seed": 5, "format": "png"})
        self.assertEqual(len(sampled["kl"]), 1)
        self.assertAlmostEqual(sampled["kl"][0], answer["kl"][0], places=3)  # KL does not depend on the drawn z

    # --- errors ------------------------------------------------------------------------------------------------------

    def test_malformed_json_is_400(self):
        message = self.error(400, "INVALID_ARGUMENT", "POST", "/v1/models/default:sample", raw=b'{"count": 1,')
        self.assertIn("not valid JSON", message)
        message = self.error(400, "INVALID_ARGUMENT", "POST", "/v1/models/default:sample", raw=b"[1]")
        self.assertIn("expected an object", message)
        message = self.error(400, "INVALID_ARGUMENT", "POST", "/v1/models/default:sample", raw=b"[" * 100000)
        self.assertIn("nested deeper", message)

    def test_wrong_content_type_is_415(self):
        message = self.error(415, "INVALID_ARGUMENT", "POST", "/v1/models/default:sample", {"count": 1},
                             content_type="text/plain")
        self.assertIn("application/json", message)

    def test_bad_fields_are_400_naming_the_field(self):
        cases = [
            ({"images": [[[0.5] * 28] * 28, [[0.5] * 28] * 27]}, "encode", "images[1]"),  # ragged
            ({"images": [[[0.5] * 27] * 27]}, "encode", "images.shape [1,1,27,27]"),  # not the model's shape
            ({"images": [[["x"] * 28] * 28]}, "encode", "images[0][0][0] is a string"),
            ({"images": [[[2.0] * 28] * 28]}, "encode", "images"),  # out of [0, 1]
            ({"images": [{"b64": "!!!"}]}, "encode", "images[0].b64 is not valid base64"),
            ({"images": [{"b64": base64.b64encode(b"GIF89a....").decode()}]}, "encode", "images[0] is not a PNG or JPEG"),
            ({"images": []}, "encode", "images is an empty list"),
            # The message quotes the first 40 bytes of images[1], cutting an "é" in two: still a 400 with a JSON body.
            ({"images": [{"b64": DIGIT_JPEG}, "é" * 30]}, "encode", "images[1] is"),
            ({}, "encode", "images is missing"),
            ({"z": [[0.0] * 19]}, "decode", "z.shape [1,19]"),
            ({"z": [[0.0] * 20], "format": "gif"}, "decode", "format"),
            ({"count": 0}, "sample", "count is 0"),
            ({"count": "3"}, "sample", "count is a string"),
            ({"count": 1, "temperature": 11}, "sample", "temperature is 11"),
            ({"count": 1, "temprature": 1}, "sample", "unknown field 'temprature'"),
            ({"count": 1, "seed": -1}, "sample", "seed is -1"),
        ]
        for body, op, words in cases:
            with self.subTest(op=op, body=str(body)[:60]):
                message = self.error(400, "INVALID_ARGUMENT", "POST", f"/v1/models/default:{op}", body)
                self.assertIn(words, message)

    def test_a_body_over_the_limit_is_413_before_it_is_read(self):
        # Only the headers: the server refuses by Content-Length, without waiting for (or buffering) the body.
        with socket.create_connection((self.host, self.port), timeout=30) as s:
            s.sendall(f"POST /v1/models/default:encode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {BODY_LIMIT + 1}\r\n\r\n".encode())
            status, body = read_response(s)
        self.assertEqual(status, 413, body)
        error = json.loads(body)["error"]
        self.assertEqual(error["code"], "RESOURCE_EXHAUSTED")
        self.assertIn("over the limit of 1048576 bytes", error["message"])
        # A body just under the limit is read and parsed (and refused for what it says, not for its size).
        padding = " " * (BODY_LIMIT - 100)
        message = self.error(400, "INVALID_ARGUMENT", "POST", "/v1/models/default:sample",
                             raw=('{"count": 0}' + padding).encode())
        self.assertIn("count is 0", message)

    def test_unknown_routes_are_404_and_wrong_methods_405(self):
        message = self.error(404, "NOT_FOUND", "GET", "/v1/nothing")
        self.assertIn("no route GET /v1/nothing", message)
        self.error(404, "NOT_FOUND", "POST", "/v1/models/default:predict", {})
        for method, path in [("GET", "/v1/models/default:encode"), ("DELETE", "/v1/models/default:sample"),
                             ("POST", "/v1/models"), ("PUT", "/v1/models/default"), ("DELETE", "/v1/train")]:
            with self.subTest(method=method, path=path):
                status, answer = self.call(method, path, {} if method != "GET" else None)
                self.assertEqual(status, 405, answer)
                self.assertIn(f"method {method} is not allowed", answer["error"]["message"])

    def test_a_stalled_client_does_not_block_other_requests(self):
        # Headers sent, then nothing: the server holds that connection on one worker, the others keep answering.
        stalled = [socket.create_connection((self.host, self.port), timeout=30) for _ in range(2)]
        try:
            stalled[0].sendall(b"POST /v1/models/default:sample HTTP/1.1\r\nHost: x\r\n")  # headers unfinished
            stalled[1].sendall(b"POST /v1/models/default:sample HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                               b"\r\nContent-Length: 100\r\n\r\n{\"count\"")  # body unfinished
            for seed in range(5):
                self.assertEqual(len(self.sample(1, seed)["png"]), 1)
            self.assertEqual(self.ok("GET", "/v1/models")["models"][0]["name"], "default")
        finally:
            for s in stalled:
                s.close()

    # --- the page ----------------------------------------------------------------------------------------------------

    def test_the_page_is_served_self_contained(self):
        with urllib.request.urlopen(self.base + "/", timeout=30) as response:
            self.assertEqual(response.status, 200)
            self.assertTrue(response.headers["Content-Type"].startswith("text/html"))
            self.assertIn("default-src 'none'", response.headers["Content-Security-Policy"])
            page = response.read().decode()
        self.assertIn("<html", page)
        self.assertIn("/v1/models", page)  # it uses the API
        self.assertNotIn("http://", page.replace("http://www.w3.org/2000/svg", ""))  # nothing from elsewhere
        self.assertNotIn("https://", page)

    # --- training ----------------------------------------------------------------------------------------------------

    def test_training_is_started_and_watched_over_http(self):
        # A FAILED_PRECONDITION is 409: resume with no stored version yet.
        message = self.error(409, "FAILED_PRECONDITION", "POST", "/v1/train", {"dataset": "mnist", "resume": True})
        self.assertIn("no loadable version", message)
        self.error(400, "INVALID_ARGUMENT", "POST", "/v1/train", {"dataset": "mnist", "epochs": 0})
        self.error(404, "NOT_FOUND", "POST", "/v1/train", {"dataset": "no-such-set"})
        before = self.served_version()
        status, started = self.call("POST", "/v1/train", {"dataset": "mnist", "epochs": 2, "batch_size": 100,
                                                          "log_every_steps": 1, "seed": 3})
        self.assertEqual(status, 202, started)
        job_id = started["job"]["id"]
        deadline = time.monotonic() + 120
        while True:
            job = self.ok("GET", "/v1/train")["job"]
            self.assertEqual(job["id"], job_id)
            if not job["running"]:
                break
            self.assertLess(time.monotonic(), deadline, "the job did not finish in 120 s")
            time.sleep(0.2)
        self.assertEqual(job["status"]["code"], "OK", job["status"])
        kinds = [e["kind"] for e in job["history"]]
        # Synthetic MNIST: 1200 training images, batch 100: 12 steps per epoch, a STEP each (log_every_steps 1).
        self.assertEqual(kinds, ["STARTED"] + (["STEP"] * 12 + ["EPOCH_END"]) * 2 + ["DONE"])
        steps = [e for e in job["history"] if e["kind"] == "STEP"]
        self.assertEqual([e["global_step"] for e in steps], list(range(1, 25)))
        self.assertTrue(all(math.isfinite(e["train"]["loss"]) and e["images_per_sec"] > 0 for e in steps))
        epoch_end = [e for e in job["history"] if e["kind"] == "EPOCH_END"]
        self.assertTrue(all("test" in e for e in epoch_end))
        self.assertEqual(job["latest"]["kind"], "DONE")
        # Every epoch published a version: the model's latest label moved by 2, and the earlier version stays
        # servable when pinned (versions are immutable and kept).
        self.assertEqual(self.served_version(), before + 2)
        self.assertEqual(job["latest"]["version"], before + 2)
        for version in (before + 1, before + 2):
            path = f"/v1/models/default/versions/{version}"
            self.assertEqual(self.sample(1, 1, path=path)["model"]["version"], version)
        message = self.error(400, "INVALID_ARGUMENT", "POST", "/v1/models/default/versions/0:sample", {"count": 1})
        self.assertIn("version number >= 1", message)
        self.error(404, "NOT_FOUND", "POST", f"/v1/models/default/versions/{before + 3}:sample", {"count": 1})


FULL_TOKEN = "http-full-token-8d1e"
READONLY_TOKEN = "http-readonly-token-2b7a"


class VaeServerHttpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        files = {}
        for name, token in [("full", FULL_TOKEN), ("readonly", READONLY_TOKEN)]:
            files[name] = os.path.join(cls.tmp.name, name)
            with open(files[name], "w") as f:
                f.write(token + "\n")
        with socket.socket() as s:  # a free port for HTTP (gRPC takes --port=0)
            s.bind(("127.0.0.1", 0))
            http_port = s.getsockname()[1]
        cls.log = open(os.path.join(cls.tmp.name, "server.log"), "w+")
        cls.server = subprocess.Popen(
            [os.environ["VAE_SERVER_BINARY"], "--host=127.0.0.1", "--port=0", f"--http_port={http_port}",
             "--threads=1", "--model_dir=" + os.path.join(cls.tmp.name, "model"), "--data_dir=" + cls.tmp.name,
             "--auth_token_file=" + files["full"], "--auth_readonly_token_file=" + files["readonly"]],
            stdout=subprocess.PIPE, stderr=cls.log, text=True)
        line = cls.server.stdout.readline()
        if not line.startswith("vae-server listening on "):
            cls.server.kill()
            cls.log.seek(0)
            raise RuntimeError(f"vae-server did not start: {line!r}\n{cls.log.read()[-3000:]}")
        cls.base = f"http://127.0.0.1:{http_port}"

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait(timeout=60)
        cls.log.close()
        cls.tmp.cleanup()

    def call(self, method, path, body=None, token=None):
        request = urllib.request.Request(self.base + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def test_the_api_needs_a_token_and_training_the_full_one(self):
        status, body = self.call("GET", "/v1/models")
        self.assertEqual(status, 401, body)
        self.assertEqual(json.loads(body)["error"]["code"], "UNAUTHENTICATED")
        status, body = self.call("POST", "/v1/models/default:sample", {"count": 1}, token="wrong")
        self.assertEqual(status, 401, body)
        for token in (READONLY_TOKEN, FULL_TOKEN):
            status, body = self.call("POST", "/v1/models/default:sample", {"count": 2, "seed": 1, "format": "png"},
                                     token=token)
            self.assertEqual(status, 200, body)
            self.assertEqual(len(json.loads(body)["png"]), 2)
        status, body = self.call("POST", "/v1/train", {"dataset": "mnist"}, token=READONLY_TOKEN)
        self.assertEqual(status, 403, body)
        self.assertEqual(json.loads(body)["error"]["code"], "PERMISSION_DENIED")
        # The full token gets past authentication: the data_dir here has no mnist, so the answer is NOT_FOUND.
        status, body = self.call("POST", "/v1/train", {"dataset": "mnist"}, token=FULL_TOKEN)
        self.assertEqual(status, 404, body)
        self.assertIn("mnist", json.loads(body)["error"]["message"])

    def test_the_page_is_open_its_api_calls_are_not(self):
        status, body = self.call("GET", "/")
        self.assertEqual(status, 200)
        self.assertIn(b"<html", body)
        status, _ = self.call("GET", "/v1/train")
        self.assertEqual(status, 401)


def flatten(nested):
    if isinstance(nested, list):
        return [v for item in nested for v in flatten(item)]
    return [nested]


def read_response(s):
    """(status, body) of one HTTP/1.1 response with a Content-Length, read from socket ."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(int(l.split(":")[1]) for l in lines if l.lower().startswith("content-length:"))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), body.decode()


if __name__ == "__main__":
    unittest.main(verbosity=2)
