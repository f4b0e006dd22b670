// Shared by the tests/client suites: one real vae-server per test binary, trained briefly through the C++ client
// library so that its outputs mean something, and a runner for the real vae-client binary.
//
// The first LiveServerTest suite starts `vae-server --port=0` (tests/integration/server_process.h) with a private
// --model_dir and --data_dir=$VAE_DATA_DIR, --max_batch=kMaxBatch, and trains it for one epoch on the first
// kTrainImages MNIST images; the global environment kills it after the last test (and, should the test process die,
// the kernel kills it: PR_SET_PDEATHSIG). Torch is only touched through vae::Client's tensors.
#ifndef VAE_TESTS_CLIENT_LIVE_SERVER_H_
#define VAE_TESTS_CLIENT_LIVE_SERVER_H_

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "tests/common/test_util.h"
#include "tests/integration/server_process.h"

extern char** environ;

namespace vae::testing {

// A localhost TCP port that nothing listens on: bound to port 0 to learn a free one, then closed.
inline int ClosedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ADD_FAILURE() << "cannot bind a localhost socket";
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The real vae-client binary as a child process, its stdout and stderr captured in files. VAE_SERVER is removed
// from its environment unless `env` sets it ("NAME=value" entries replace inherited ones).
class CliProcess {
 public:
  struct Result {
    int exit_code = -1;  // 128 + N when killed by signal N; -1 when it did not finish in time (it is then killed)
    std::string out;
    std::string err;
  };

  CliProcess(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
    std::vector<std::string> argv_strings = {VAE_CLIENT_BINARY};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string entry = *e;
      const std::string name = entry.substr(0, entry.find('='));
      bool replaced = name == "VAE_SERVER";
      for (const std::string& mine : env) replaced = replaced || mine.substr(0, mine.find('=')) == name;
      if (!replaced) env_strings.push_back(entry);
    }
    env_strings.insert(env_strings.end(), env.begin(), env.end());
    std::vector<char*> argv, envp;
    for (auto& a : argv_strings) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string out = files_.file("stdout"), err = files_.file("stderr");
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      const int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int in = open("/dev/null", O_RDONLY);
      if (o < 0 || e < 0 || in < 0) _exit(126);
      dup2(in, STDIN_FILENO);
      dup2(o, STDOUT_FILENO);
      dup2(e, STDERR_FILENO);
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    if (pid_ < 0) ADD_FAILURE() << "fork failed";
  }

  ~CliProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  // Waits until stdout contains `text`; false after `timeout` or when the process exited first.
  bool WaitForOutput(const std::string& text, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (ReadFile(files_.file("stdout")).find(text) != std::string::npos) return true;
      if (pid_ <= 0 || waitpid(pid_, &status_, WNOHANG) == pid_) {
        pid_ = -1;
        return ReadFile(files_.file("stdout")).find(text) != std::string::npos;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  void Signal(int signal_number) {
    if (pid_ > 0) kill(pid_, signal_number);
  }

  Result Wait(std::chrono::seconds timeout = std::chrono::seconds(60)) {
    Result result;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (pid_ > 0 && std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid_, &status_, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (pid_ > 0) {
      ADD_FAILURE() << "vae-client did not exit within " << timeout.count() << " s";
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    } else {
      result.exit_code = WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
    }
    result.out = ReadFile(files_.file("stdout"));
    result.err = ReadFile(files_.file("stderr"));
    return result;
  }

 private:
  TempDir files_;
  pid_t pid_ = -1;
  int status_ = 0;
};

// Runs vae-client to completion.
inline CliProcess::Result RunCli(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
  CliProcess process(args, env);
  return process.Wait();
}

// A vae-server process (--data_dir=$VAE_DATA_DIR, --max_batch=kLiveMaxBatch) with a model folder of its own, and a
// vae::Client connected to it. Destroying it kills and reaps the server, then removes the folder.
constexpr int kLiveMaxBatch = 64;  // small, so that the CLI's request splitting is exercised
struct LiveServer {
  // Null, with a test failure naming the reason, when the server does not start or cannot be connected to.
  static std::unique_ptr<LiveServer> Start() {
    const std::string data = DataDir();
    if (data.empty()) return nullptr;
    auto live = std::make_unique<LiveServer>();
    live->process =
        ServerProcess::Start(VAE_SERVER_BINARY, {"--model_dir=" + live->model_dir.path(), "--data_dir=" + data,
                                                 "--max_batch=" + std::to_string(kLiveMaxBatch)});
    if (live->process == nullptr) return nullptr;
    auto client = Client::Create(live->process->address());
    if (!client.ok()) {
      ADD_FAILURE() << client.status();
      return nullptr;
    }
    live->client = *std::move(client);
    return live;
  }

  TempDir model_dir;  // declared first: destroyed after the process that writes into it
  std::unique_ptr<ServerProcess> process;
  std::unique_ptr<Client> client;
};

// The fixture: one trained vae-server shared by every LiveServerTest of the test binary, started by the first such
// suite and stopped after the last test (LiveServerEnvironment). tests/client/CMakeLists.txt runs the suites that
// use it in one process (CTest test client.live_server), so the binary starts one server and trains it once; a test
// that changes what the server serves (trains a fresh model) starts a LiveServer of its own instead.
class LiveServerTest : public ::testing::Test {
 public:
  static constexpr int kMaxBatch = kLiveMaxBatch;  // the server's --max_batch
  static constexpr int kTrainImages = 2000;        // one epoch of 20 steps of 100 images

  static void SetUpTestSuite() {
    if (started_) return;  // shared, or failed once already (that failure was reported)
    started_ = true;
    shared_ = LiveServer::Start().release();
    if (shared_ == nullptr) return;
    server_ = shared_->process.get();
    model_dir_ = &shared_->model_dir;
    client::TrainOptions options;
    options.dataset = "mnist";
    options.epochs = 1;
    options.batch_size = 100;
    options.max_train_images = kTrainImages;
    options.log_every_steps = 5;
    options.seed = 1;
    train_messages_ = new std::vector<client::TrainProgress>();
    auto trained =
        shared_->client->Train(options, [](const client::TrainProgress& p) { train_messages_->push_back(p); });
    if (!trained.ok() || trained->cancelled) {
      ADD_FAILURE() << "training the shared model failed: " << trained.status() << "\n" << server_->log();
      return;
    }
    client_ = shared_->client.get();
  }

  // Called once, after the binary's last test (see LiveServerEnvironment).
  static void StopSharedServer() {
    delete shared_;  // kills and reaps vae-server
    delete train_messages_;
    shared_ = nullptr;
    server_ = nullptr;
    client_ = nullptr;
    model_dir_ = nullptr;
    train_messages_ = nullptr;
  }

 protected:
  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "the shared vae-server did not start";
    ASSERT_NE(client_, nullptr) << "the shared vae-server was not trained";
  }

  const std::string& address() const { return server_->address(); }
  std::string ServerFlag() const { return "--server=" + server_->address(); }
  Client& client() { return *client_; }

  static inline bool started_ = false;
  static inline LiveServer* shared_ = nullptr;
  static inline ServerProcess* server_ = nullptr;  // parts of *shared_
  static inline Client* client_ = nullptr;
  static inline TempDir* model_dir_ = nullptr;
  static inline std::vector<client::TrainProgress>* train_messages_ = nullptr;
};

// Stops the shared server after the last test, whichever suite ran last.
class LiveServerEnvironment : public ::testing::Environment {
 public:
  void TearDown() override { LiveServerTest::StopSharedServer(); }
};
inline ::testing::Environment* const kLiveServerEnvironment =
    ::testing::AddGlobalTestEnvironment(new LiveServerEnvironment());

}  // namespace vae::testing

#endif  // VAE_TESTS_CLIENT_LIVE_SERVER_H_
