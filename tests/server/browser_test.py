#!/usr/bin/python3
"""The web page (GET /, server/web/index.html) in a real browser: Debian's chromium, headless, against a live server.

Run by CTest (server.browser, label `browser`) with VAE_HTTP_TEST_SERVER (tests/server/http_test_server.cc: the
HTTP API of a ServerCore on a free 127.0.0.1 port) and VAE_SCREENSHOT (where to save the screenshot). Chromium loads
the page with a virtual-time budget (time advances only while nothing is loading, so the page's API calls finish
first) and dumps the DOM after its scripts ran; the test checks there that the model list is filled, the sample grid
holds 64 decoded PNG images, the traversal grid holds 49, the reconstruction shows its NLL and KL, and the page
marked itself ready. Then it saves a screenshot.
Skipped, saying so, where chromium is not installed.
"""
import html.parser
import os
import shutil
import struct
import subprocess
import tempfile
import unittest

CHROMIUM = shutil.which("chromium")


class Dom(html.parser.HTMLParser):
    """The elements the test looks at: options of #models, images of #samples and #traversal, <body>'s attributes."""

    def __init__(self):
        super().__init__()
        self.stack = []  # ids of the open elements that have one
        self.models = []
        self.images = {"samples": [], "traversal": []}
        self.body = {}
        self.text = {}  # id -> text, for the reconstruction's numbers

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        if tag == "img":
            for grid in self.images:
                if grid in self.stack:
                    self.images[grid].append(attrs.get("src", ""))
            return  # void element
        if tag == "option" and "models" in self.stack:
            self.models.append(attrs.get("value"))
        self.stack.append(attrs.get("id", ""))

    def handle_data(self, data):
        if self.stack and self.stack[-1] in ("recon-nll", "recon-kl"):
            self.text[self.stack[-1]] = self.text.get(self.stack[-1], "") + data

    def handle_endtag(self, tag):
        if tag != "img" and self.stack:
            self.stack.pop()


class BrowserTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # A missing browser fails the test, never skips it: scripts/install-deps.sh installs chromium.
        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed (scripts/install-deps.sh installs it)")
        cls.server = subprocess.Popen([os.environ["VAE_HTTP_TEST_SERVER"]], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        line = cls.server.stdout.readline()
        if not line.startswith("listening on "):
            cls.server.kill()
            raise RuntimeError(f"vae-http-test-server did not start: {line!r}")
        cls.url = "http://" + line.split()[-1] + "/"
        cls.profile = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.server.stdin.close()
        try:
            cls.server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cls.server.kill()
            cls.server.wait()
        cls.profile.cleanup()

    def chromium(self, *args):
        command = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars",
                   "--user-data-dir=" + self.profile.name, "--virtual-time-budget=15000", *args, self.url]
        done = subprocess.run(command, capture_output=True, text=True, timeout=50)
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        return done.stdout

    def test_page_fills_the_model_list_and_the_grids_with_decoded_images(self):
        dom = Dom()
        dom.feed(self.chromium("--dump-dom"))
        self.assertEqual(dom.body.get("data-ready"), "true", "the page's start() did not finish")
        self.assertEqual(dom.models, ["default"])
        self.assertEqual(len(dom.images["samples"]), 64)
        self.assertEqual(len(dom.images["traversal"]), 49)  # 7 x 7 steps
        for src in dom.images["samples"] + dom.images["traversal"]:
            self.assertTrue(src.startswith("data:image/png;base64,iVBORw0KGgo"), src[:60])  # PNG's signature
        self.assertGreater(len(set(dom.images["samples"])), 1)  # different samples, not one image 64 times
        # The first sample's reconstruction terms, in nats: a Bernoulli NLL over 784 pixels and a KL, both > 0.
        for field in ("recon-nll", "recon-kl"):
            value, unit = dom.text[field].split()
            self.assertEqual(unit, "nats")
            self.assertGreater(float(value), 0, field)

    def test_screenshot(self):
        path = os.environ.get("VAE_SCREENSHOT") or os.path.join(self.profile.name, "page.png")
        self.chromium("--window-size=1400,1100", "--screenshot=" + path)
        with open(path, "rb") as f:
            header = f.read(24)
        self.assertEqual(header[:8], b"\x89PNG\r\n\x1a\n")
        self.assertEqual(struct.unpack(">II", header[16:24]), (1400, 1100))


if __name__ == "__main__":
    unittest.main(verbosity=2)
