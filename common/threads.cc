#include "common/threads.h"

#include <algorithm>
#include <thread>

namespace vae {

int ResolveThreadCount(int threads) {
  return threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace vae
