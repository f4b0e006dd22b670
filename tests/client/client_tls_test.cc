// TLS and mutual TLS end to end: the real vae-server with --tls_* flags, the C++ client library and the vae-client
// binary with theirs. Certificates are made per suite by the openssl command (a test CA, a server certificate for
// 127.0.0.1, a client certificate, and an unrelated CA).
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "client/client.h"
#include "tests/client/live_server.h"
#include "tests/common/test_util.h"
#include "tests/integration/server_process.h"

namespace vae::testing {
namespace {

using ::testing::HasSubstr;

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = new TempDir();
    const std::string script = certs_->file("make-certs.sh");
    std::ofstream(script) << R"(set -e
cd "$1"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() {
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 2 -subj "/CN=$1" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
leaf() {  # name, CN, extensions
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2"
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days 2 \
    -extfile "$1.ext" 2>/dev/null
}
ca ca
ca other
leaf server localhost "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
leaf client vae-test-client "extendedKeyUsage=clientAuth"
echo not a certificate > junk.pem
)";
    const std::string command = "bash " + script + " " + certs_->path() + " > " + certs_->file("openssl.log") + " 2>&1";
    ASSERT_EQ(std::system(command.c_str()), 0) << ReadFile(certs_->file("openssl.log"));
  }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }
  static std::string Cert(const std::string& name) { return certs_->file(name); }

  // A fresh mnist server with `flags` added. Testing the transport needs no training, so its --data_dir is empty.
  static std::unique_ptr<ServerProcess> StartServer(const std::vector<std::string>& flags, const TempDir& models) {
    std::vector<std::string> args = {"--model_dir=" + models.path(), "--data_dir=" + models.path()};
    args.insert(args.end(), flags.begin(), flags.end());
    return ServerProcess::Start(VAE_SERVER_BINARY, args);
  }

  static std::unique_ptr<client::Client> Connect(const ServerProcess& server,
                                                 std::optional<client::ClientOptions::Tls> tls) {
    client::ClientOptions options;
    options.timeout = absl::Seconds(10);
    options.tls = std::move(tls);
    auto c = client::Client::Create(server.address(), options);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  static TempDir* certs_;
};

TempDir* TlsTest::certs_ = nullptr;

TEST_F(TlsTest, ATlsServerAnswersTlsClientsThatTrustItsCaAndNoOneElse) {
  TempDir models;
  auto server = StartServer({"--tls_cert=" + Cert("server.pem"), "--tls_key=" + Cert("server.key")}, models);
  ASSERT_NE(server, nullptr);

  auto tls = client::LoadTlsFiles(Cert("ca.pem"));
  ASSERT_TRUE(tls.ok()) << tls.status();
  auto trusted = Connect(*server, *tls);
  auto info = trusted->GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status() << "\n" << server->log();
  EXPECT_EQ(info->preset, "mnist");
  // A real call over the encrypted channel: one image in, its [1, 20] posterior out.
  auto encoded = trusted->Encode(client::ImageInput::FromTensor(at::full({1, 1, 28, 28}, 0.5f)));
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_EQ(encoded->mu.sizes(), (std::vector<int64_t>{1, 20}));
  EXPECT_GT(encoded->sigma.min().item<float>(), 0.0f);

  // Plaintext to a TLS port, and TLS that does not trust the server's CA: no call gets through.
  // The messages say what went wrong in one line.
  auto plaintext = Connect(*server, std::nullopt)->GetModelInfo();
  EXPECT_EQ(plaintext.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(plaintext.status().message(), HasSubstr("a TLS-only server closes plaintext connections"));
  auto wrong_ca = client::LoadTlsFiles(Cert("other.pem"));
  ASSERT_TRUE(wrong_ca.ok());
  auto untrusted = Connect(*server, *wrong_ca)->GetModelInfo();
  EXPECT_EQ(untrusted.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(untrusted.status().message(), HasSubstr("TLS: the server's certificate is not signed by a trusted CA"));

  // vae-client: --tls_ca makes it a TLS client; without it, it cannot reach the server.
  auto cli = RunCli({"--server=" + server->address(), "--tls_ca=" + Cert("ca.pem"), "health"});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_THAT(cli.out, HasSubstr("SERVING"));
  auto cli_plain = RunCli({"--server=" + server->address(), "--timeout=5s", "health"});
  EXPECT_EQ(cli_plain.exit_code, 1) << cli_plain.out << cli_plain.err;
  EXPECT_TRUE(server->running());
}

TEST_F(TlsTest, MutualTlsRequiresAClientCertificateSignedByTheClientCa) {
  TempDir models;
  auto server = StartServer(
      {"--tls_cert=" + Cert("server.pem"), "--tls_key=" + Cert("server.key"), "--tls_client_ca=" + Cert("ca.pem")},
      models);
  ASSERT_NE(server, nullptr);
  auto anonymous = client::LoadTlsFiles(Cert("ca.pem"));
  ASSERT_TRUE(anonymous.ok());
  EXPECT_EQ(Connect(*server, *anonymous)->GetModelInfo().status().code(), absl::StatusCode::kUnavailable);

  auto with_cert = client::LoadTlsFiles(Cert("ca.pem"), Cert("client.pem"), Cert("client.key"));
  ASSERT_TRUE(with_cert.ok()) << with_cert.status();
  auto info = Connect(*server, *with_cert)->GetModelInfo();
  EXPECT_TRUE(info.ok()) << info.status() << "\n" << server->log();

  auto cli = RunCli({"--server=" + server->address(), "--tls_ca=" + Cert("ca.pem"), "--tls_cert=" + Cert("client.pem"),
                     "--tls_key=" + Cert("client.key"), "info", "--json"});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_THAT(cli.out, HasSubstr("\"preset\""));
}

TEST_F(TlsTest, BadTlsSettingsAreClearErrors) {
  // Server: each misconfiguration stops it before it serves, naming the flag or file.
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--tls_cert=" + Cert("server.pem")}, "--tls_cert and --tls_key go together"},
      {{"--tls_client_ca=" + Cert("ca.pem")}, "--tls_client_ca needs --tls_cert and --tls_key"},
      {{"--tls_cert=" + Cert("missing.pem"), "--tls_key=" + Cert("server.key")}, "--tls_cert: no such file"},
      {{"--tls_cert=" + Cert("server.pem"), "--tls_key=" + Cert("junk.pem")}, "is not a PEM file"},
  };
  for (const auto& [flags, message] : cases) {
    SCOPED_TRACE(message);
    TempDir models, out;
    std::string command = std::string(VAE_SERVER_BINARY) + " --host=127.0.0.1 --port=0 --model_dir=" + models.path() +
                          " --data_dir=" + models.path();
    for (const auto& f : flags) command += " " + f;
    command += " > " + out.file("stdout") + " 2> " + out.file("stderr") + " < /dev/null";
    const int status = std::system(command.c_str());
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
    EXPECT_THAT(ReadFile(out.file("stderr")), HasSubstr(message));
    EXPECT_THAT(ReadFile(out.file("stdout")), ::testing::Not(HasSubstr("listening")));
  }
  // Client library and vae-client.
  EXPECT_EQ(client::LoadTlsFiles(Cert("ca.pem"), Cert("client.pem"), "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client::LoadTlsFiles(Cert("nope.pem")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client::LoadTlsFiles(Cert("junk.pem")).status().code(), absl::StatusCode::kInvalidArgument);
  auto cli = RunCli({"--server=127.0.0.1:1", "--tls_ca=" + Cert("nope.pem"), "health"});
  EXPECT_EQ(cli.exit_code, 2);
  EXPECT_THAT(cli.err, HasSubstr("tls: cannot read " + Cert("nope.pem")));
}

}  // namespace
}  // namespace vae::testing
