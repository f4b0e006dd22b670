// vae-client: the command line of vae-server. Everything is in client/cli.{h,cc}; `vae-client --help` lists it.
#include <cstdlib>
#include <iostream>

#include "client/cli.h"

int main(int argc, char** argv) {
  // Connection failures are reported as one line by the CLI; gRPC's own log lines would only repeat them.
  setenv("GRPC_VERBOSITY", "NONE", /*overwrite=*/0);
  return vae::cli::Run(argc, argv, std::cout, std::cerr);
}
