// A shared library whose initialiser sends the process SIGTERM: LD_PRELOADed into vae-server, it stands for a SIGTERM
// that arrives while the process is still starting, before main() (where LibTorch's, gRPC's and OpenCV's own
// initialisers spend ~0.5 s). The ELF rules run the executable's .preinit_array before any library initialiser, so
// whatever holds here holds for a signal that arrives during theirs.
#include <signal.h>

namespace {

__attribute__((constructor)) void SigtermDuringStartUp() { raise(SIGTERM); }

}  // namespace
