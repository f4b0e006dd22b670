// ServerProcess: the real vae-server binary as a child process on 127.0.0.1 and a free port (--port=0; the port is
// read from its "vae-server listening on HOST:PORT" line). Its stdout and stderr go to files in a private temp
// folder, shown by log() when a test fails. The destructor kills the child if it still runs and reaps it, and the
// child is also killed by the kernel should the test process die first (PR_SET_PDEATHSIG), so no test leaves a
// server behind. Torch-free.
#ifndef VAE_TESTS_INTEGRATION_SERVER_PROCESS_H_
#define VAE_TESTS_INTEGRATION_SERVER_PROCESS_H_

#include <fcntl.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/test_util.h"
#include "vae/v1/vae_service.grpc.pb.h"

namespace vae::testing {

class ServerProcess {
 public:
  // Starts `binary --host=127.0.0.1 --port=0 --threads=2 args...` and waits (up to `timeout`) until it listens.
  // Returns null (with a test failure naming the reason and the log) when it exits or stays silent.
  static std::unique_ptr<ServerProcess> Start(const std::string& binary, const std::vector<std::string>& args,
                                              std::chrono::seconds timeout = std::chrono::seconds(60)) {
    std::unique_ptr<ServerProcess> p = Spawn(binary, args);
    if (p == nullptr || !p->WaitUntilListening(timeout)) return nullptr;
    return p;
  }

  // Forks and execs as Start does, without waiting for anything. Null (with a test failure) when fork fails.
  static std::unique_ptr<ServerProcess> Spawn(const std::string& binary, const std::vector<std::string>& args) {
    std::unique_ptr<ServerProcess> p(new ServerProcess());
    std::vector<std::string> argv_strings = {binary, "--host=127.0.0.1", "--port=0", "--threads=2"};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_strings) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string out = p->files_.file("stdout"), err = p->files_.file("stderr");
    const pid_t parent = getpid();
    p->pid_ = fork();
    if (p->pid_ == 0) {
      // Child: only async-signal-safe calls until exec.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      const int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (o < 0 || e < 0) _exit(126);
      dup2(o, STDOUT_FILENO);
      dup2(e, STDERR_FILENO);
      execv(argv[0], argv.data());
      _exit(127);
    }
    if (p->pid_ < 0) {
      ADD_FAILURE() << "fork failed";
      return nullptr;
    }
    return p;
  }

  // Waits until the "listening" line names the address (then address(), port() and channel() are set). False, with
  // a test failure naming the reason and the log, when the process exits first or `timeout` passes.
  bool WaitUntilListening(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const std::string marker = "vae-server listening on ";
    while (std::chrono::steady_clock::now() < deadline) {
      std::ifstream in(files_.file("stdout"));
      std::string line;
      while (std::getline(in, line)) {
        const auto at = line.find(marker);
        if (at == std::string::npos) continue;
        address_ = line.substr(at + marker.size());
        port_ = std::stoi(address_.substr(address_.rfind(':') + 1));
        channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
        return true;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        ADD_FAILURE() << "vae-server exited before listening (status " << status << "):\n" << log();
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "vae-server did not print its address within " << timeout.count() << " s:\n" << log();
    return false;
  }

  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  // Sends `signal` and waits up to `timeout` for the exit. Returns the exit code, 128 + N when killed by signal N,
  // or -1 when it did not exit in time (it is then killed).
  int Stop(int signal, std::chrono::seconds timeout) {
    if (pid_ <= 0) return -1;
    kill(pid_, signal);
    return Wait(timeout);
  }

  // Waits up to `timeout` for the process to exit on its own; returns as Stop does.
  int Wait(std::chrono::seconds timeout) {
    if (pid_ <= 0) return -1;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;  // the destructor kills it
  }

  bool running() const { return pid_ > 0 && kill(pid_, 0) == 0; }
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  const std::string& address() const { return address_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  std::unique_ptr<v1::VaeService::Stub> NewStub() const { return v1::VaeService::NewStub(channel_); }

  // stdout and stderr so far.
  std::string log() const { return "--- stdout\n" + Read("stdout") + "--- stderr\n" + Read("stderr"); }

 private:
  ServerProcess() = default;
  std::string Read(const std::string& name) const {
    std::ifstream in(files_.file(name));
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  TempDir files_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace vae::testing

#endif  // VAE_TESTS_INTEGRATION_SERVER_PROCESS_H_
